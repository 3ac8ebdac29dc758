"""SIGKILL the worker mid-training: the reconciler sees the heartbeat stop, queues the job
again, and a new worker resumes from the newest stored checkpoint and finishes it."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import free_port
from tests.reliability.conftest import (
    REDIS_URL,
    cluster_env,
    kill,
    s3_env,
    start_cluster,
    start_training,
    stop_cluster,
    upload,
)

pytestmark = pytest.mark.slow
# 40 steps with a checkpoint every 5 leave a wide window to kill in; progress every step.
TRAINING = {"steps": 40, "checkpoint_every": 5, "log_every": 1}
CHECKPOINT_EVERY = TRAINING["checkpoint_every"]


def _kill_mid_training_and_resume(
    env: dict[str, str],
    root: Path,
    port: int,
    video: Path,
    second_worker_env: dict[str, str],
    compare_with_uninterrupted: bool = False,
) -> None:
    cluster = start_cluster(env, root, port)
    try:
        first = cluster.start_worker()
        dataset = upload(cluster, video)
        job_id = start_training(cluster, dataset["id"], TRAINING)["id"]
        # Training is 0.3..1.0 of the progress; past step 12 a step-10 checkpoint is stored.
        past_step_12 = 0.3 + 0.7 * 12 / TRAINING["steps"]
        running = cluster.wait_for(
            job_id, lambda job: job["stage"] == "train" and job["progress"] >= past_step_12
        )
        assert running["status"] == "running" and running["attempt"] == 1
        kill(first)  # SIGKILL: no cleanup, no ack, no final state write
        cluster.start_worker(**second_worker_env)
        job = cluster.wait_final(job_id)
        assert job["status"] == "succeeded", job["error"]
        assert job["attempt"] == 2
        messages = [event["message"] for event in cluster.events(job_id)]
        assert any(m.startswith("queued again: worker lost") for m in messages), messages
        resumed = [e for e in cluster.events(job_id) if e["kind"] == "resume"]
        assert len(resumed) == 1, messages
        step = resumed[0]["data"]["step"]
        assert step >= 10 and step % CHECKPOINT_EVERY == 0
        assert resumed[0]["message"] == f"resumed from step {step}"
        # at most one checkpoint interval lost: the kill came before step
        # progress_at_kill + interval
        killed_at_step = round((running["progress"] - 0.3) / 0.7 * TRAINING["steps"])
        assert killed_at_step - step <= CHECKPOINT_EVERY + 1
        model = cluster.get(f"/v1/models/{job['model_id']}")
        assert model["status"] == "ready" and model["metrics"]["psnr"] > 10
        if compare_with_uninterrupted:
            # Batches are seeded from the step and the optimizer state is restored, so the
            # resumed model matches one trained without a kill.
            again = cluster.wait_final(start_training(cluster, dataset["id"], TRAINING)["id"])
            assert again["status"] == "succeeded" and again["attempt"] == 1
            plain = cluster.get(f"/v1/models/{again['model_id']}")["metrics"]
            assert abs(plain["psnr"] - model["metrics"]["psnr"]) < 0.5, (plain, model)
    finally:
        stop_cluster(cluster)


def test_killed_worker_resumes_embedded(tmp_path: Path, sample_video: Path) -> None:
    port = free_port()
    env = cluster_env(tmp_path, port)
    _kill_mid_training_and_resume(
        env, tmp_path, port, sample_video, {}, compare_with_uninterrupted=True
    )


def test_killed_worker_resumes_postgres_redis_s3(
    tmp_path: Path, sample_video: Path, postgres_url: str, moto_endpoint: str
) -> None:
    import redis

    redis.Redis.from_url(REDIS_URL).flushdb()
    port = free_port()
    env = cluster_env(
        tmp_path,
        port,
        FACESPEECH_DATABASE_URL=postgres_url,
        FACESPEECH_BROKER_URL=REDIS_URL,
        **s3_env(moto_endpoint, "reliability-kill"),
    )
    # The second worker has an empty work dir, like a new node: it must restore from S3.
    other_node = {"FACESPEECH_DATA_DIR": str(tmp_path / "other-node")}
    _kill_mid_training_and_resume(env, tmp_path, port, sample_video, other_node)
