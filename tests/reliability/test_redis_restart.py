"""Restart Redis (no persistence: every message is gone) while jobs are queued and running:
every job still finishes, and none does its work twice."""

from __future__ import annotations

import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import select

from tests.conftest import clear_cached_settings, free_port
from tests.reliability.conftest import cluster_env, kill, start_cluster, stop_cluster

pytestmark = pytest.mark.skipif(shutil.which("redis-server") is None, reason="no redis-server")


def _start_redis(port: int, folder: Path) -> subprocess.Popen[bytes]:
    folder.mkdir(exist_ok=True)
    server = subprocess.Popen(
        [
            "redis-server",
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(folder),
        ],
        stdout=(folder / "redis.log").open("ab"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    import redis

    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            redis.Redis(port=port).ping()
            return server
        except redis.ConnectionError:
            time.sleep(0.1)
    raise RuntimeError("redis-server did not start")


class RedisServer:
    """A redis-server of this test's own, on a free port, that the test may restart."""

    def __init__(self, folder: Path) -> None:
        self.port, self.folder = free_port(), folder
        self.process = _start_redis(self.port, folder)

    def restart(self, down_s: float) -> None:
        kill(self.process)  # SIGKILL: with no persistence every queued message is gone
        time.sleep(down_s)
        self.process = _start_redis(self.port, self.folder)


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path / "redis")
    yield server
    kill(server.process)


def _probe_jobs(count: int, seconds: float) -> list[str]:
    from facespeech.api.security import create_tenant_with_key
    from facespeech.api.service import create_probe_job
    from facespeech.db.session import session_scope

    ids = []
    with session_scope() as session:
        tenant, _ = create_tenant_with_key(session, "probes")
        for _ in range(count):
            ids.append(create_probe_job(session, tenant, seconds).id)
    return ids


def _work_done_counts(ids: list[str]) -> dict[str, int]:
    from facespeech.db.models import JobEvent
    from facespeech.db.session import session_scope

    with session_scope() as session:
        kinds = session.scalars(select(JobEvent.job_id).where(JobEvent.kind == "probe"))
        done = list(kinds)
    return {job_id: done.count(job_id) for job_id in ids}


def _messages(job_id: str) -> list[str]:
    from facespeech.db.models import JobEvent
    from facespeech.db.session import session_scope

    with session_scope() as session:
        return list(session.scalars(select(JobEvent.message).where(JobEvent.job_id == job_id)))


def test_redis_restart_loses_no_job_and_runs_none_twice(
    tmp_path: Path,
    postgres_url: str,
    own_redis: RedisServer,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from facespeech.db.models import Job
    from facespeech.db.session import session_scope

    broker = f"redis://127.0.0.1:{own_redis.port}/0"
    port = free_port()
    env = cluster_env(
        tmp_path, port, FACESPEECH_DATABASE_URL=postgres_url, FACESPEECH_BROKER_URL=broker
    )
    for name, value in env.items():
        if name.startswith("FACESPEECH_"):
            monkeypatch.setenv(name, value)
    clear_cached_settings()
    cluster = start_cluster(env, tmp_path, port)
    try:
        cluster.start_worker()
        ids = _probe_jobs(6, seconds=2.0)

        def status(job_id: str) -> str:
            with session_scope() as session:
                job = session.get(Job, job_id)
                assert job is not None
                return job.status.value

        deadline = time.monotonic() + 120
        while status(ids[0]) != "running" and time.monotonic() < deadline:
            time.sleep(0.1)
        assert [status(i) for i in ids[1:]].count("queued") >= 4
        own_redis.restart(down_s=1.0)
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline and any(status(i) != "succeeded" for i in ids):
            time.sleep(0.5)
        assert [status(i) for i in ids] == ["succeeded"] * len(ids)
        # a stray duplicate message for a finished job does nothing
        from facespeech.jobs.tasks import enqueue

        enqueue("facespeech.probe", ids[0])
        time.sleep(3)
        assert _work_done_counts(ids) == dict.fromkeys(ids, 1)
        assert cluster.workers[0].poll() is None, "the worker died with Redis"
        requeued = _messages(ids[-1])
        assert any("queue message was lost" in m for m in requeued), requeued
    finally:
        stop_cluster(cluster)
        clear_cached_settings()
