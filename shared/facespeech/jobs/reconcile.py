"""The reconciler: compares the database (the truth) with the broker and workers' heartbeats.

- A `running` job whose heartbeat is older than `job_heartbeat_timeout_s` lost its worker
  (SIGKILL, OOM, a node gone). It is queued again, or failed with a reason once it has used
  `job_max_attempts`. Redis would redeliver the unacked message only after its visibility
  timeout (hours), and kombu's filesystem transport never does: this is what recovers quickly.
- A `queued` job with no message in the broker for `job_queued_grace_s` lost its message (a
  Redis restart without persistence, a crash between commit and publish). It is queued again.

Every change is a conditional UPDATE (status and age re-checked in the WHERE clause), so
several reconcilers (each worker, `facespeech serve`) never queue one job twice. A duplicate
message is harmless anyway: `state.claim` skips a job that runs with a fresh heartbeat.
"""

from __future__ import annotations

import base64
import json
import logging
import threading
import time
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from facespeech import object_keys
from facespeech.config import Settings, get_settings
from facespeech.db.models import Dataset, DatasetStatus, Job, JobKind, JobStatus
from facespeech.db.session import session_scope
from facespeech.jobs import state
from facespeech.jobs.celery_app import QUEUES

log = logging.getLogger(__name__)
# kombu's Redis transport keeps priorities 3, 6 and 9 in lists named queue + this + priority.
_REDIS_PRIORITY_SEP = "\x06\x16"


@dataclass
class ReconcileReport:
    requeued: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)
    purged: int = 0  # partial uploads removed


def task_for(session: Session, job: Job) -> str:
    """The task that continues the job from where its stored state says it is."""
    if job.kind is not JobKind.train:
        return f"facespeech.{job.kind.value}"
    dataset = session.get(Dataset, job.dataset_id) if job.dataset_id else None
    ready = dataset is not None and dataset.status is DatasetStatus.ready
    return "facespeech.train" if ready else "facespeech.preprocess"


def reconcile(settings: Settings | None = None) -> ReconcileReport:
    settings = settings or get_settings()
    report = ReconcileReport()
    _recover_stale_running(settings, report)
    in_broker = broker_job_ids(settings)
    if in_broker is not None:
        _recover_lost_queued(settings, in_broker, report)
    report.purged = _purge_partial_uploads(settings)
    if report.requeued or report.failed:
        log.info("reconciler: requeued %s, failed %s", report.requeued, report.failed)
    return report


def _recover_stale_running(settings: Settings, report: ReconcileReport) -> None:
    cutoff = state.now() - timedelta(seconds=settings.job_heartbeat_timeout_s)
    last_sign = func.coalesce(Job.heartbeat_at, Job.started_at, Job.created_at)
    stale = (Job.status == JobStatus.running) & (last_sign < cutoff)
    with session_scope() as session:
        ids = list(session.scalars(select(Job.id).where(stale)))
    for job_id in ids:
        reason = f"worker lost: no heartbeat for {settings.job_heartbeat_timeout_s:.0f} s"
        _requeue_or_fail(settings, job_id, (Job.id == job_id) & stale, reason, report)


def _recover_lost_queued(settings: Settings, in_broker: set[str], report: ReconcileReport) -> None:
    cutoff = state.now() - timedelta(seconds=settings.job_queued_grace_s)
    last_sign = func.coalesce(Job.heartbeat_at, Job.created_at)
    lost = (Job.status == JobStatus.queued) & (last_sign < cutoff)
    with session_scope() as session:
        ids = [i for i in session.scalars(select(Job.id).where(lost)) if i not in in_broker]
    for job_id in ids:
        grace = settings.job_queued_grace_s
        reason = f"its queue message was lost (none in the broker for {grace:.0f} s)"
        _requeue_or_fail(settings, job_id, (Job.id == job_id) & lost, reason, report)


def _requeue_or_fail(
    settings: Settings, job_id: str, condition: Any, reason: str, report: ReconcileReport
) -> None:
    from facespeech.jobs.tasks import enqueue

    with session_scope() as session:
        taken = session.execute(
            update(Job).where(condition).values(status=JobStatus.queued, heartbeat_at=state.now())
        )
        if getattr(taken, "rowcount", 0) != 1:
            return  # another reconciler, or the job itself, moved it meanwhile
        job = session.get(Job, job_id)
        assert job is not None
        if job.attempt >= settings.job_max_attempts:
            message = f"gave up after {job.attempt} attempts; {reason}"
            state.finish_in_session(session, job, JobStatus.failed, message)
            tenant_id, give_up = job.tenant_id, True
        else:
            state.add_event(session, job_id, "status", f"queued again: {reason}")
            task_name, give_up = task_for(session, job), False
    if give_up:
        _delete_checkpoints(tenant_id, job_id)
        report.failed.append(job_id)
        return
    try:
        task_id = enqueue(task_name, job_id)
    except Exception:  # noqa: BLE001 - broker down: the queued pass tries again later
        log.warning("reconciler: could not queue job %s", job_id, exc_info=True)
        return
    with session_scope() as session:
        session.execute(update(Job).where(Job.id == job_id).values(celery_task_id=task_id))
    report.requeued.append(job_id)


def _purge_partial_uploads(settings: Settings) -> int:
    from facespeech.storage import get_store

    try:
        return get_store().purge_partial_uploads(settings.partial_upload_max_age_s)
    except Exception:  # noqa: BLE001 - the store may be down; next round
        log.warning("reconciler: partial uploads not purged", exc_info=True)
        return 0


def _delete_checkpoints(tenant_id: str, job_id: str) -> None:
    from facespeech.storage import get_store

    try:
        get_store().delete_prefix(object_keys.job_checkpoints(tenant_id, job_id))
    except Exception:  # noqa: BLE001
        log.warning("reconciler: checkpoints of job %s not removed", job_id, exc_info=True)


# --- what the broker holds -------------------------------------------------------------------


def broker_job_ids(settings: Settings | None = None) -> set[str] | None:
    """Job ids of every message waiting in a queue or reserved by a worker; None if unknown."""
    settings = settings or get_settings()
    try:
        messages = (
            _filesystem_messages(settings)
            if settings.is_embedded_broker
            else (_redis_messages(settings))
        )
    except Exception:  # noqa: BLE001 - an unreachable broker: make no claim about it
        log.warning("reconciler: broker not readable", exc_info=True)
        return None
    return {job_id for job_id in map(_job_id_of, messages) if job_id}


def _filesystem_messages(settings: Settings) -> list[str]:
    folder = settings.broker_dir / "queue"
    texts = []
    for path in folder.glob("*.msg"):
        try:
            texts.append(path.read_text())
        except FileNotFoundError:  # consumed while we looked
            continue
    return texts


def _redis_messages(settings: Settings) -> list[str]:
    import redis

    client = redis.Redis.from_url(settings.broker_url, socket_timeout=5)
    try:
        texts: list[str] = []
        for queue in QUEUES:
            for name in (queue, *(f"{queue}{_REDIS_PRIORITY_SEP}{p}" for p in (3, 6, 9))):
                texts += [_text(raw) for raw in client.lrange(name, 0, -1)]
        # Reserved by a worker (prefetched, or waiting for a retry countdown): not lost, unless
        # it was taken longer ago than the grace period and its job is still queued: then the
        # consumer died before claiming it, and Redis would only give it back after the
        # (hours-long) visibility timeout.
        taken_since = time.time() - settings.job_queued_grace_s
        recent: list[bytes] = client.zrangebyscore("unacked_index", taken_since, "+inf")  # type: ignore[assignment]
        fresh = {_text(tag) for tag in recent}
        for tag, raw in client.hgetall("unacked").items():
            if _text(tag) in fresh:
                texts.append(json.dumps(json.loads(raw)[0]))
        return texts
    finally:
        client.close()


def _text(raw: bytes | str) -> str:
    return raw.decode() if isinstance(raw, bytes) else raw


def _job_id_of(text: str) -> str | None:
    try:
        message = json.loads(text)
        body = message["body"]
        if message.get("properties", {}).get("body_encoding") == "base64":
            body = base64.b64decode(body).decode()
        args = json.loads(body)[0]
        return str(args[0]) if args else None
    except (ValueError, KeyError, IndexError, TypeError):
        return None


# --- running it periodically -----------------------------------------------------------------


def start_reconciler_thread(settings: Settings | None = None) -> threading.Event:
    """Reconcile now and every `reconcile_interval_s` in a daemon thread; set() stops it."""
    settings = settings or get_settings()
    stop = threading.Event()

    def loop() -> None:
        while True:
            try:
                reconcile(settings)
            except Exception:  # noqa: BLE001 - a database hiccup: try again next round
                log.warning("reconciler round failed", exc_info=True)
            if stop.wait(settings.reconcile_interval_s):
                return

    threading.Thread(target=loop, name="reconciler", daemon=True).start()
    return stop
