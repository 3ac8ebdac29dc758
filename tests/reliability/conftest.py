"""Real stacks whose worker processes the test starts and kills itself.

`facespeech serve --no-worker` runs the API (and a reconciler); workers are separate
`facespeech worker` processes, so a test can SIGKILL one mid-job and start another. Heartbeat
and reconcile intervals are a few seconds instead of minutes, so recovery fits in a test.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from facespeech.localstack import new_api_key, start_serve, wait_ready
from tests.conftest import free_port
from tests.e2e.conftest import _base_env, _postgres_database

REDIS_URL = "redis://127.0.0.1:6379/11"
FAST_RECOVERY = {
    "FACESPEECH_JOB_HEARTBEAT_INTERVAL_S": "1",
    "FACESPEECH_JOB_HEARTBEAT_TIMEOUT_S": "6",
    "FACESPEECH_RECONCILE_INTERVAL_S": "2",
    "FACESPEECH_JOB_QUEUED_GRACE_S": "8",
    "FACESPEECH_TENANT_RATE_PER_S": "0",
}


@dataclass
class Cluster:
    base_url: str
    api_key: str
    env: dict[str, str]
    root: Path
    server: subprocess.Popen[bytes]
    workers: list[subprocess.Popen[bytes]] = field(default_factory=list)

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.api_key}"}

    def start_worker(self, **env: str) -> subprocess.Popen[bytes]:
        log = (self.root / f"worker-{len(self.workers)}.log").open("wb")
        worker = subprocess.Popen(
            [sys.executable, "-m", "facespeech.cli", "worker", "--metrics-port", "0"],
            env={**self.env, **env},
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self.workers.append(worker)
        return worker

    def get(self, path: str) -> Any:
        response = httpx.get(self.base_url + path, headers=self.headers, timeout=30)
        response.raise_for_status()
        return response.json()

    def events(self, job_id: str) -> list[dict[str, Any]]:
        return list(self.get(f"/v1/jobs/{job_id}/events?limit=1000")["data"])

    def wait_for(
        self, job_id: str, done: Callable[[dict[str, Any]], bool], timeout: float = 300
    ) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            job: dict[str, Any] = self.get(f"/v1/jobs/{job_id}")
            if done(job):
                return job
            time.sleep(0.2)
        raise AssertionError(f"job {job_id} timed out: {self.get(f'/v1/jobs/{job_id}')}")

    def wait_final(self, job_id: str, timeout: float = 300) -> dict[str, Any]:
        final = ("succeeded", "failed", "canceled")
        return self.wait_for(job_id, lambda job: job["status"] in final, timeout)

    def logs(self) -> str:
        return "\n".join(p.read_text(errors="replace") for p in sorted(self.root.glob("*.log")))


def kill(process: subprocess.Popen[bytes], sig: int = signal.SIGKILL) -> None:
    if process.poll() is None:
        os.killpg(process.pid, sig)
    process.wait(timeout=60)


def start_cluster(env: dict[str, str], root: Path, port: int) -> Cluster:
    key = new_api_key(env, "reliability")
    server = start_serve(env, port, root / "server.log", worker=False)
    base_url = f"http://127.0.0.1:{port}"
    wait_ready(base_url, server, root / "server.log")
    return Cluster(base_url, key, env, root, server)


def stop_cluster(cluster: Cluster) -> None:
    for process in [*cluster.workers, cluster.server]:
        kill(process, signal.SIGTERM if process is cluster.server else signal.SIGKILL)


def cluster_env(root: Path, port: int, **overrides: str) -> dict[str, str]:
    env = _base_env(root / "data", port)
    env.update(FAST_RECOVERY)
    env.update(overrides)
    return env


@pytest.fixture
def postgres_url() -> Iterator[str]:
    database = _postgres_database()
    yield next(database)
    database.close()


@pytest.fixture
def moto_endpoint() -> Iterator[str]:
    from moto.server import ThreadedMotoServer

    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port)
    server.start()
    yield f"127.0.0.1:{port}"
    server.stop()


def s3_env(endpoint: str, bucket: str) -> dict[str, str]:
    return {
        "FACESPEECH_STORE_BACKEND": "s3",
        "FACESPEECH_S3_ENDPOINT": endpoint,
        "FACESPEECH_S3_ACCESS_KEY": "testing",
        "FACESPEECH_S3_SECRET_KEY": "testing",
        "FACESPEECH_S3_BUCKET": bucket,
    }


@pytest.fixture
def sample_video(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from facespeech.sample import make_sample

    video, _ = make_sample(tmp_path_factory.mktemp("sample"), seconds=8.0)
    return video


def upload(cluster: Cluster, video: Path) -> dict[str, Any]:
    with video.open("rb") as handle:
        response = httpx.post(
            f"{cluster.base_url}/v1/datasets",
            headers=cluster.headers,
            files={"file": (video.name, handle, "video/mp4")},
            timeout=120,
        )
    response.raise_for_status()
    return dict(response.json())


def start_training(cluster: Cluster, dataset_id: str, overrides: dict[str, int]) -> dict[str, Any]:
    response = httpx.post(
        f"{cluster.base_url}/v1/training-runs",
        headers=cluster.headers,
        json={"dataset_id": dataset_id, "preset": "tiny", "overrides": overrides},
        timeout=60,
    )
    response.raise_for_status()
    return dict(response.json())
