"""Every dashboard and alert expression parses in a real Prometheus and finds its series.

The test starts the real API (uvicorn, two worker processes, prometheus_client multiprocess
mode) and a real `facespeech worker` on the embedded stack, then a real Prometheus server
(Debian's `prometheus` package) scraping both every second.

Exceptions, each because the series cannot exist on this machine, not because it is unchecked:
- GPU series (facespeech_gpu_*, DCGM_*): no GPU or NVML driver here; NVML-less workers must
  produce no GPU series at all, which is asserted instead. Their expressions are still parsed.
- Per-run training gauges (facespeech_training_*): they appear only while a training job
  reports progress, and even the tiny preset needs minutes; the worker must still declare them
  (HELP/TYPE lines in its /metrics), which is asserted.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from tests.conftest import free_port, prometheus_tool

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
METRIC_NAME = re.compile(r"\b(facespeech_[a-z_]+|DCGM_FI_[A-Z_]+|up)\b")
NO_SERIES_HERE = ("facespeech_gpu_", "DCGM_")
ONLY_DURING_TRAINING = "facespeech_training_"


def dashboard_expressions() -> list[tuple[str, str]]:
    found = []
    for path in sorted((DEPLOY / "grafana" / "dashboards").glob("*.json")):
        board = json.loads(path.read_text())
        for panel in board["panels"]:
            for target in panel["targets"]:
                found.append((f"{board['title']}: {panel['title']}", target["expr"]))
    return found


def rule_expressions() -> list[tuple[str, str]]:
    rules = yaml.safe_load((DEPLOY / "prometheus" / "alerts.yml").read_text())
    return [(rule["alert"], rule["expr"]) for group in rules["groups"] for rule in group["rules"]]


def _wait_for(url: str, seconds: float, process: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{process.args} exited with {process.returncode}")
        try:
            if httpx.get(url, timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    raise TimeoutError(f"{url} did not answer within {seconds} s")


def _stop(process: subprocess.Popen[bytes]) -> None:
    process.terminate()
    try:
        process.wait(timeout=20)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


class Stack:
    def __init__(self, api_port: int, worker_port: int, prometheus_port: int) -> None:
        self.api = f"http://127.0.0.1:{api_port}"
        self.worker_metrics = f"http://127.0.0.1:{worker_port}/metrics"
        self.prometheus = f"http://127.0.0.1:{prometheus_port}"

    def query(self, expr: str) -> dict[str, Any]:
        response = httpx.get(f"{self.prometheus}/api/v1/query", params={"query": expr}, timeout=10)
        body: dict[str, Any] = response.json()
        return body


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    prometheus = prometheus_tool("prometheus")
    tmp = tmp_path_factory.mktemp("live")
    (tmp / "multiproc").mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("FACESPEECH_", "PROMETHEUS_"))}
    env |= {"FACESPEECH_DATA_DIR": str(tmp / "data"), "FACESPEECH_DEVICE": "cpu"}
    stack = Stack(free_port(), free_port(), free_port())
    api_port = stack.api.rsplit(":", 1)[1]
    worker_port = stack.worker_metrics.split(":")[2].split("/")[0]
    config = {
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "rule_files": [str(DEPLOY / "prometheus" / "alerts.yml")],
        "scrape_configs": [
            {"job_name": "facespeech-api",
             "static_configs": [{"targets": [f"127.0.0.1:{api_port}"]}]},
            {"job_name": "facespeech-worker",
             "static_configs": [{"targets": [f"127.0.0.1:{worker_port}"]}]},
        ],
    }
    (tmp / "prometheus.yml").write_text(yaml.safe_dump(config))
    processes = []
    try:
        api = subprocess.Popen(
            [sys.executable, "-m", "uvicorn", "facespeech.api.app:create_app", "--factory",
             "--host", "127.0.0.1", "--port", api_port, "--workers", "2", "--log-level", "warning"],
            env=env | {"PROMETHEUS_MULTIPROC_DIR": str(tmp / "multiproc")}, cwd=tmp)
        processes.append(api)
        _wait_for(f"{stack.api}/healthz", 60, api)
        worker = subprocess.Popen(
            [sys.executable, "-m", "facespeech.cli", "worker", "--metrics-port", worker_port,
             "--queues", "preprocess,train,render", "--loglevel", "WARNING"], env=env, cwd=tmp)
        processes.append(worker)
        _wait_for(stack.worker_metrics, 60, worker)
        server = subprocess.Popen(
            [prometheus, f"--config.file={tmp / 'prometheus.yml'}",
             f"--storage.tsdb.path={tmp / 'tsdb'}",
             f"--web.listen-address=127.0.0.1:{stack.prometheus.rsplit(':', 1)[1]}"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=tmp)
        processes.append(server)
        _wait_for(f"{stack.prometheus}/-/ready", 30, server)
        for path in ("/healthz", "/readyz", "/v1/jobs/nope", "/healthz"):
            httpx.get(stack.api + path, timeout=10)
        _wait_for_scrapes(stack, 4)
        yield stack
    finally:
        for process in reversed(processes):
            _stop(process)


def _wait_for_scrapes(stack: Stack, scrapes: int) -> None:
    expr = f"min(count_over_time(up[1m])) >= {scrapes} and min(up) == 1"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if stack.query(expr)["data"]["result"]:
            return
        time.sleep(0.5)
    raise TimeoutError(f"Prometheus did not scrape both targets {scrapes} times")


def _has_gpu(stack: Stack) -> bool:
    return bool(stack.query("facespeech_gpu_memory_total_bytes")["data"]["result"])


@pytest.mark.parametrize(("where", "expr"), dashboard_expressions())
def test_dashboard_expression_returns_data(stack: Stack, where: str, expr: str) -> None:
    answer = stack.query(expr)

    assert answer["status"] == "success", f"{where}: {answer.get('error')}"
    names = set(METRIC_NAME.findall(expr))
    if any(name.startswith(NO_SERIES_HERE) for name in names) and not _has_gpu(stack):
        return  # parsed; see the module docstring
    if any(name.startswith(ONLY_DURING_TRAINING) for name in names):
        return  # parsed; declared names are checked below
    assert answer["data"]["result"], f"{where}: {expr} returned no series"


@pytest.mark.parametrize(("alert", "expr"), rule_expressions())
def test_rule_expression_parses_and_its_series_exist(stack: Stack, alert: str, expr: str) -> None:
    answer = stack.query(expr)

    assert answer["status"] == "success", f"{alert}: {answer.get('error')}"
    for name in set(METRIC_NAME.findall(expr)):
        if name.startswith(NO_SERIES_HERE) and not _has_gpu(stack):
            continue
        assert stack.query(f"count({name})")["data"]["result"], f"{alert}: no {name} series"


def test_prometheus_loaded_the_rules_healthy(stack: Stack) -> None:
    groups = httpx.get(f"{stack.prometheus}/api/v1/rules", timeout=10).json()["data"]["groups"]
    rules = [rule for group in groups for rule in group["rules"]]

    assert {rule["name"] for rule in rules} == {name for name, _ in rule_expressions()}
    time.sleep(1.5)  # one evaluation after the scrapes
    rules = [r for g in httpx.get(f"{stack.prometheus}/api/v1/rules").json()["data"]["groups"]
             for r in g["rules"]]
    assert all(rule["health"] != "err" for rule in rules), rules


def test_worker_declares_training_gauges_and_no_gpu_series_without_nvml(stack: Stack) -> None:
    text = httpx.get(stack.worker_metrics, timeout=10).text
    training = {name for _, expr in dashboard_expressions()
                for name in METRIC_NAME.findall(expr) if name.startswith(ONLY_DURING_TRAINING)}

    for name in training:
        assert f"# TYPE {name} gauge" in text, name
    if not _has_gpu(stack):
        assert "facespeech_gpu_" not in text


def test_api_metrics_add_up_over_its_processes(stack: Stack) -> None:
    # Multiprocess mode: /metrics sums what both uvicorn processes served.
    before = stack.query('sum(facespeech_http_requests_total{route="/healthz"})')
    count_before = float(before["data"]["result"][0]["value"][1])
    for _ in range(20):
        httpx.get(f"{stack.api}/healthz", timeout=10)
    text = httpx.get(f"{stack.api}/metrics", timeout=10).text
    served = sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
                 if line.startswith("facespeech_http_requests_total{") and '"/healthz"' in line)

    assert served >= count_before + 20
