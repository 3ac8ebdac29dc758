"""Cancel during every stage (preprocess, train, render) with a real worker: the job ends
canceled, its scratch and run folders and stored checkpoints are gone, and the worker goes
straight on to the next job."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pytest

from facespeech.sample import make_speech
from tests.conftest import free_port
from tests.reliability.conftest import (
    Cluster,
    cluster_env,
    start_cluster,
    start_training,
    stop_cluster,
    upload,
)

pytestmark = pytest.mark.slow
TRAINING = {"steps": 40, "checkpoint_every": 5, "log_every": 1}


def _cancel_when(cluster: Cluster, job_id: str, ready: Any) -> dict[str, Any]:
    cluster.wait_for(job_id, ready)
    response = httpx.post(f"{cluster.base_url}/v1/jobs/{job_id}/cancel", headers=cluster.headers)
    response.raise_for_status()
    return cluster.wait_final(job_id)


def _assert_nothing_left(cluster: Cluster, job: dict[str, Any]) -> None:
    assert job["status"] == "canceled", job
    data = Path(cluster.env["FACESPEECH_DATA_DIR"])
    for leftover in (data / "work" / "jobs" / job["id"], data / "work" / "runs" / job["id"]):
        assert not leftover.exists(), f"{leftover} outlived the canceled job"
    stored = data / "objects" / "data" / "tenants"
    job_objects = [p.name for p in stored.rglob(f"jobs/{job['id']}/**/*") if p.is_file()]
    assert all(name != "render.mp4" and not name.startswith("step-") for name in job_objects)
    assert not list((data / "objects" / "tmp").iterdir())


def test_cancel_in_every_stage_leaves_nothing_behind(tmp_path: Path, sample_video: Path) -> None:
    port = free_port()
    cluster = start_cluster(cluster_env(tmp_path, port), tmp_path, port)
    try:
        worker = cluster.start_worker()
        dataset = upload(cluster, sample_video)

        in_preprocess = start_training(cluster, dataset["id"], TRAINING)["id"]
        job = _cancel_when(
            cluster, in_preprocess, lambda j: j["status"] == "running" and 0 < j["progress"] < 0.25
        )
        _assert_nothing_left(cluster, job)
        assert cluster.get(f"/v1/datasets/{dataset['id']}")["status"] == "uploaded"
        assert cluster.get(f"/v1/models/{job['model_id']}")["status"] == "failed"

        in_training = start_training(cluster, dataset["id"], TRAINING)["id"]
        job = _cancel_when(
            cluster, in_training, lambda j: j["stage"] == "train" and j["progress"] > 0.5
        )
        _assert_nothing_left(cluster, job)

        finished = start_training(cluster, dataset["id"], {"steps": 20})["id"]
        model_id = cluster.wait_final(finished)["model_id"]
        speech = make_speech(tmp_path / "speech.wav", seconds=30.0, seed=2)
        with speech.open("rb") as handle:
            render = httpx.post(
                f"{cluster.base_url}/v1/renders",
                headers=cluster.headers,
                data={"model_id": model_id},
                files={"audio": ("speech.wav", handle, "audio/wav")},
                timeout=60,
            )
        render.raise_for_status()
        job = _cancel_when(
            cluster,
            render.json()["id"],
            lambda j: j["status"] == "running" and j["progress"] > 0.05,
        )
        _assert_nothing_left(cluster, job)
        assert worker.poll() is None, "the worker died"
        assert cluster.api_key not in cluster.logs()
    finally:
        stop_cluster(cluster)
