"""The reconciler against a real database and a real broker (filesystem and Redis), no worker:
stale running jobs are queued again or failed; lost queue messages are sent again; jobs whose
message is in the broker, or whose heartbeat is fresh, are left alone."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest

from facespeech.db.migrate import upgrade_head
from facespeech.db.models import Job, JobKind, JobStatus, Tenant
from facespeech.db.session import session_scope
from facespeech.jobs import state
from facespeech.jobs.reconcile import broker_job_ids, reconcile
from tests.conftest import clear_cached_settings

REDIS_URL = "redis://127.0.0.1:6379/12"


@pytest.fixture(params=["filesystem", "redis"])
def broker(
    request: pytest.FixtureRequest, embedded_env: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[str]:
    if request.param == "redis":
        redis = pytest.importorskip("redis")
        try:
            redis.Redis.from_url(REDIS_URL).flushdb()
        except redis.ConnectionError as error:
            pytest.skip(f"Redis unreachable: {error}")
        monkeypatch.setenv("FACESPEECH_BROKER_URL", REDIS_URL)
    monkeypatch.setenv("FACESPEECH_JOB_HEARTBEAT_TIMEOUT_S", "30")
    monkeypatch.setenv("FACESPEECH_JOB_QUEUED_GRACE_S", "30")
    monkeypatch.setenv("FACESPEECH_JOB_MAX_ATTEMPTS", "3")
    clear_cached_settings()
    upgrade_head()
    yield request.param
    if request.param == "redis":
        redis.Redis.from_url(REDIS_URL).flushdb()


def _job(status: JobStatus, attempt: int, age_s: float) -> str:
    with session_scope() as session:
        tenant = session.query(Tenant).filter_by(name="t").one_or_none() or Tenant(name="t")
        session.add(tenant)
        session.flush()
        job = Job(
            tenant_id=tenant.id,
            kind=JobKind.probe,
            status=status,
            attempt=attempt,
            params={"seconds": 0},
            heartbeat_at=state.now() - timedelta(seconds=age_s),
        )
        session.add(job)
        session.flush()
        return job.id


def _status(job_id: str) -> tuple[JobStatus, str | None]:
    with session_scope() as session:
        job = session.get(Job, job_id)
        assert job is not None
        return job.status, job.error


def test_stale_running_jobs_are_requeued_or_failed(broker: str) -> None:
    lost = _job(JobStatus.running, attempt=1, age_s=120)
    exhausted = _job(JobStatus.running, attempt=3, age_s=120)
    alive = _job(JobStatus.running, attempt=1, age_s=2)
    report = reconcile()
    assert report.requeued == [lost] and report.failed == [exhausted]
    assert _status(lost) == (JobStatus.queued, None)
    status, error = _status(exhausted)
    assert status is JobStatus.failed and error is not None
    assert "gave up after 3 attempts; worker lost: no heartbeat" in error
    assert _status(alive)[0] is JobStatus.running
    assert lost in (broker_job_ids() or set())
    # a second round finds nothing more to do: the new message is in the broker
    assert reconcile().requeued == []


def test_lost_queue_messages_are_sent_again(broker: str) -> None:
    lost = _job(JobStatus.queued, attempt=0, age_s=120)
    fresh = _job(JobStatus.queued, attempt=0, age_s=1)
    assert reconcile().requeued == [lost]
    assert broker_job_ids() == {lost}
    with session_scope() as session:
        assert session.get(Job, fresh) is not None
    messages = []
    with session_scope() as session:
        from facespeech.db.models import JobEvent

        messages = [e.message for e in session.query(JobEvent).filter_by(job_id=lost)]
    assert any("queue message was lost" in m for m in messages)


def test_a_duplicate_delivery_does_not_run_a_live_job(broker: str) -> None:
    running = _job(JobStatus.running, attempt=1, age_s=1)
    with pytest.raises(state.JobGone):
        state.claim(running, "other-worker", 3, "probe")
    stale = _job(JobStatus.running, attempt=1, age_s=120)
    assert state.claim(stale, "other-worker", 3, "probe").attempt == 2


def test_a_message_taken_by_a_dead_consumer_is_sent_again(broker: str) -> None:
    """A consumer took the message and died before claiming the job (SIGKILL): Redis keeps it
    in `unacked` until the visibility timeout, hours away; the reconciler must not wait."""
    if broker != "redis":
        pytest.skip("only Redis holds taken messages in an unacked hash")
    import json
    import time

    import redis

    from facespeech.jobs.celery_app import QUEUES

    lost = _job(JobStatus.queued, attempt=0, age_s=120)
    assert reconcile().requeued == [lost]
    client = redis.Redis.from_url(REDIS_URL)
    queue = next(name for name in QUEUES if client.llen(name))
    message = json.loads(client.rpop(queue))
    client.hset("unacked", "dead-consumer", json.dumps([message, "", queue]))
    client.zadd("unacked_index", {"dead-consumer": time.time() - 600})
    _age(lost, 120)
    assert lost not in (broker_job_ids() or set())
    assert reconcile().requeued == [lost]
    client.zadd("unacked_index", {"dead-consumer": time.time()})  # a live consumer's, just taken
    assert lost in (broker_job_ids() or set())


def _age(job_id: str, seconds: float) -> None:
    with session_scope() as session:
        job = session.get(Job, job_id)
        assert job is not None
        job.heartbeat_at = job.created_at = state.now() - timedelta(seconds=seconds)
