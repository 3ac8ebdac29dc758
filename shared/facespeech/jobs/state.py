"""The job state machine, kept in the database (the source of truth, not the broker).

queued -> running -> succeeded | failed | canceled; a redelivered task re-enters running and
counts an attempt, so a job that kills its worker again and again ends as failed.

A running job's worker refreshes `heartbeat_at`; a second delivery of the same job (the
reconciler re-enqueued it, or the broker redelivered it) finds it running with a fresh
heartbeat and leaves it alone, so a job never runs twice at once.

Workers write state through `db_retry`: while the database is unreachable a write is retried
with backoff for `db_retry_s` instead of losing the job's outcome.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any, ParamSpec, TypeVar

from sqlalchemy import select, update
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session
from tenacity import RetryCallState, retry, retry_if_exception_type, wait_exponential

from facespeech.config import get_settings
from facespeech.db.models import Job, JobEvent, JobKind, JobStatus, ModelStatus, TrainedModel
from facespeech.db.session import session_scope
from facespeech.hooks import Progress
from facespeech.observability import jobs as job_metrics

PROGRESS_WRITE_INTERVAL_S = 1.0
log = logging.getLogger(__name__)
P = ParamSpec("P")
R = TypeVar("R")


def _db_retry_spent(retry_state: RetryCallState) -> bool:
    # Read at call time, not import time: tests and workers set it through Settings.
    return (retry_state.seconds_since_start or 0.0) >= get_settings().db_retry_s


def _log_db_retry(retry_state: RetryCallState) -> None:
    log.warning(
        "database unreachable in %s (try %d); retrying",
        getattr(retry_state.fn, "__name__", "?"),
        retry_state.attempt_number,
    )


def db_retry(func: Callable[P, R]) -> Callable[P, R]:
    """Retry a state write with backoff while the database is unreachable."""
    wrapped: Callable[P, R] = retry(
        retry=retry_if_exception_type(OperationalError),
        wait=wait_exponential(multiplier=0.25, max=5),
        stop=_db_retry_spent,
        before_sleep=_log_db_retry,
        reraise=True,
    )(func)
    return wrapped


class JobGone(Exception):
    """The job is final or canceled: the task must stop without touching it further."""


def now() -> datetime:
    return datetime.now(UTC)


def add_event(session: Session, job_id: str, kind: str, message: str = "", **data: Any) -> None:
    session.add(JobEvent(job_id=job_id, kind=kind, message=message, data=data))


def aware(moment: datetime) -> datetime:
    """SQLite hands back naive datetimes; every stored time is UTC."""
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def is_stale(job: Job, timeout_s: float) -> bool:
    last_sign = job.heartbeat_at or job.started_at or job.created_at
    return aware(last_sign) < now() - timedelta(seconds=timeout_s)


@db_retry
def claim(job_id: str, worker: str, max_attempts: int, stage: str) -> Job:
    """Mark the job running for this attempt; raise JobGone if there is nothing to do."""
    with session_scope() as session:
        job = session.get(Job, job_id, with_for_update=True)
        if job is None or job.status.is_final:
            raise JobGone(job_id)
        if job.status is JobStatus.running and not is_stale(
            job, get_settings().job_heartbeat_timeout_s
        ):
            raise JobGone(job_id)  # a duplicate delivery: it runs elsewhere right now
        if job.cancel_requested:
            finish_in_session(session, job, JobStatus.canceled, "canceled before it started")
            raise JobGone(job_id)
        job.attempt += 1
        if job.attempt > max_attempts:
            reason = f"gave up after {max_attempts} attempts (the worker was lost each time)"
            finish_in_session(session, job, JobStatus.failed, reason)
            raise JobGone(job_id)
        job.status = JobStatus.running
        job.stage = stage
        job.worker = worker
        job.heartbeat_at = now()
        job.started_at = job.started_at or now()
        add_event(session, job_id, "status", f"running (attempt {job.attempt})", worker=worker)
        session.flush()
        session.expunge(job)
        return job


def finish_in_session(session: Session, job: Job, status: JobStatus, error: str | None) -> None:
    """Make the job final; a training job's model fails with it unless it succeeded."""
    job.status = status
    job.error = error
    job.finished_at = now()
    job.eta_seconds = None
    if status is JobStatus.succeeded:
        job.progress = 1.0
        job.stage = "done"
    add_event(session, job.id, "status", status.value + (f": {error}" if error else ""))
    if job.model_id and job.kind is JobKind.train and status is not JobStatus.succeeded:
        model = session.get(TrainedModel, job.model_id)
        if model is not None and model.status is ModelStatus.training:
            model.status = ModelStatus.failed
    job_metrics.job_finished(job.id, job.kind, status, job.created_at, job.metrics)


@db_retry
def finish(job_id: str, status: JobStatus, error: str | None = None, **fields: Any) -> None:
    with session_scope() as session:
        job = session.get(Job, job_id, with_for_update=True)
        if job is None or job.status.is_final:
            return
        for name, value in fields.items():
            setattr(job, name, value)
        finish_in_session(session, job, status, error)


@db_retry
def set_stage(job_id: str, stage: str, message: str = "") -> None:
    with session_scope() as session:
        session.execute(update(Job).where(Job.id == job_id).values(stage=stage, heartbeat_at=now()))
        add_event(session, job_id, "stage", message or stage)


@db_retry
def is_cancel_requested(job_id: str) -> bool:
    with session_scope() as session:
        flag = session.scalar(select(Job.cancel_requested).where(Job.id == job_id))
        return bool(flag)


@db_retry
def requeue_for_retry(job_id: str, reason: str) -> None:
    with session_scope() as session:
        session.execute(
            update(Job)
            .where(Job.id == job_id)
            .values(status=JobStatus.queued, heartbeat_at=now(), worker=None)
        )
        add_event(session, job_id, "status", f"retrying: {reason}")


@db_retry
def add_event_now(job_id: str, kind: str, message: str, **data: Any) -> None:
    with session_scope() as session:
        add_event(session, job_id, kind, message, **data)


def beat(job_id: str) -> None:
    """Refresh the heartbeat of a job this worker runs (not retried: the next beat comes)."""
    with session_scope() as session:
        session.execute(
            update(Job)
            .where(Job.id == job_id, Job.status == JobStatus.running)
            .values(heartbeat_at=now())
        )


class ProgressReporter:
    """Turns library progress into throttled job updates, with an ETA from the rate so far."""

    def __init__(self, job_id: str, span: tuple[float, float] = (0.0, 1.0)) -> None:
        self.job_id = job_id
        self.span = span
        self.started = time.monotonic()
        self.last_write = 0.0
        self.last_stage = ""

    def __call__(self, progress: Progress) -> None:
        job_metrics.progress(self.job_id, progress)
        stage, fraction, metrics = progress.stage, progress.fraction, dict(progress.metrics)
        lo, hi = self.span
        overall = lo + (hi - lo) * min(max(fraction, 0.0), 1.0)
        stage_changed = stage != self.last_stage
        if not stage_changed and time.monotonic() - self.last_write < PROGRESS_WRITE_INTERVAL_S:
            return
        self.last_write = time.monotonic()
        self.last_stage = stage
        elapsed = time.monotonic() - self.started
        eta = elapsed * (1 - fraction) / fraction if fraction > 0.01 else None
        values: dict[str, Any] = {
            "stage": stage,
            "progress": overall,
            "eta_seconds": eta,
            "heartbeat_at": now(),
        }
        try:
            self._write(values, metrics, stage_changed)
        except OperationalError:  # progress is advisory; the next write brings it up to date
            log.warning("job %s: progress not written, the database is unreachable", self.job_id)

    def _write(self, values: dict[str, Any], metrics: dict[str, Any], stage_changed: bool) -> None:
        stage = values["stage"]
        with session_scope() as session:
            if metrics:
                job = session.get(Job, self.job_id)
                if job is not None:
                    values["metrics"] = {**job.metrics, **metrics}
            session.execute(update(Job).where(Job.id == self.job_id).values(**values))
            if stage_changed:
                add_event(session, self.job_id, "stage", stage)
            elif metrics:
                add_event(session, self.job_id, "metrics", "", **metrics)
