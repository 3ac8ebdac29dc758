"""Job, training and render metrics of a worker process, fed by jobs/state.py and tasks.py.

Counts that must agree across workers (jobs by status, queue depth) come from the database
and the broker at scrape time (collectors.py); what only the running worker knows (how long
its task took, the loss of the run it trains, the frames it rendered) is recorded here.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

from prometheus_client import Counter, Gauge, Histogram

from facespeech.errors import InputError
from facespeech.hooks import Progress, Stopped
from facespeech.observability.metrics import LIVE_REGISTRY

KINDS = ("preprocess", "train", "render")
OUTCOMES = ("succeeded", "canceled", "input_error", "error")
FINAL_STATUSES = ("succeeded", "failed", "canceled")
# Seconds to days: a preprocess takes minutes, a quality training run many hours.
DURATION_BUCKETS = (1, 5, 15, 30, 60, 120, 300, 600, 1800, 3600, 7200, 14400, 43200, 86400)

JOBS_FINISHED = Counter(
    "facespeech_jobs_finished_total",
    "Jobs that reached a final status",
    ["kind", "status"],
    registry=LIVE_REGISTRY,
)
JOB_DURATION = Histogram(
    "facespeech_job_duration_seconds",
    "Job time from submission to its final status",
    ["kind", "status"],
    buckets=DURATION_BUCKETS,
    registry=LIVE_REGISTRY,
)
TASK_DURATION = Histogram(
    "facespeech_job_stage_duration_seconds",
    "One task attempt of a job (stage = the task: preprocess, train, render), by outcome",
    ["kind", "stage", "outcome"],
    buckets=DURATION_BUCKETS,
    registry=LIVE_REGISTRY,
)
RETRIES = Counter(
    "facespeech_job_retries_total",
    "Task attempts handed back for a retry",
    ["kind", "stage"],
    registry=LIVE_REGISTRY,
)
WORKER_BUSY = Gauge(
    "facespeech_worker_busy", "1 while this worker runs a task", registry=LIVE_REGISTRY
)
WORKER_HEARTBEAT = Gauge(
    "facespeech_worker_heartbeat_timestamp_seconds",
    "Unix time this worker last started, progressed or ended a task (or came up)",
    registry=LIVE_REGISTRY,
)

TRAIN_STEP = Gauge(
    "facespeech_training_step", "Optimiser step of the run", ["job_id"], registry=LIVE_REGISTRY
)
TRAIN_PROGRESS = Gauge(
    "facespeech_training_progress_ratio",
    "Fraction of the run done",
    ["job_id"],
    registry=LIVE_REGISTRY,
)
TRAIN_LOSS = Gauge(
    "facespeech_training_loss", "Photometric training loss", ["job_id"], registry=LIVE_REGISTRY
)
TRAIN_STEP_RATE = Gauge(
    "facespeech_training_steps_per_second",
    "Optimiser steps per second",
    ["job_id"],
    registry=LIVE_REGISTRY,
)
TRAIN_SAMPLES_RATE = Gauge(
    "facespeech_training_samples_per_second",
    "Training samples per second",
    ["job_id"],
    registry=LIVE_REGISTRY,
)
TRAIN_PSNR = Gauge(
    "facespeech_training_heldout_psnr_db",
    "Held-out PSNR of the run",
    ["job_id"],
    registry=LIVE_REGISTRY,
)
TRAIN_GAUGES = (
    TRAIN_STEP,
    TRAIN_PROGRESS,
    TRAIN_LOSS,
    TRAIN_STEP_RATE,
    TRAIN_SAMPLES_RATE,
    TRAIN_PSNR,
)

RENDER_FRAMES = Counter(
    "facespeech_render_frames_total", "Video frames rendered", registry=LIVE_REGISTRY
)
RENDER_FPS = Gauge(
    "facespeech_render_fps", "Frames per second of the last render", registry=LIVE_REGISTRY
)
RENDER_MODEL_CACHE = Counter(
    "facespeech_render_model_cache_total",
    "Model checkpoint lookups in the worker's cache",
    ["result"],
    registry=LIVE_REGISTRY,
)


def initialise() -> None:
    """Called once by a worker's metrics server."""
    # Zero-valued series from the start, so rates and alerts see them before the first event.
    for kind in KINDS:
        for status in FINAL_STATUSES:
            JOBS_FINISHED.labels(kind, status)
            JOB_DURATION.labels(kind, status)
        RETRIES.labels(kind, kind)
        for outcome in OUTCOMES:
            TASK_DURATION.labels(kind, kind, outcome)
    for result in ("hit", "miss"):
        RENDER_MODEL_CACHE.labels(result)
    WORKER_HEARTBEAT.set_to_current_time()


@contextmanager
def task_attempt(kind: str, stage: str) -> Iterator[None]:
    """Time one task attempt; the outcome is read from how the task body ended."""
    for gauge in TRAIN_GAUGES:  # a worker runs one task at a time: the last run's gauges go
        gauge.clear()
    WORKER_BUSY.set(1)
    WORKER_HEARTBEAT.set_to_current_time()
    started = time.monotonic()
    outcome = "error"
    try:
        yield
        outcome = "succeeded"
    except Stopped:
        outcome = "canceled"
        raise
    except InputError:
        outcome = "input_error"
        raise
    finally:
        TASK_DURATION.labels(kind, stage, outcome).observe(time.monotonic() - started)
        WORKER_BUSY.set(0)
        WORKER_HEARTBEAT.set_to_current_time()


def retried(kind: str, stage: str) -> None:
    RETRIES.labels(kind, stage).inc()


def progress(job_id: str, update: Progress) -> None:
    """Every progress report of a job; the training loop's metrics become gauges."""
    WORKER_HEARTBEAT.set_to_current_time()
    if update.stage != "train":
        return
    metrics = update.metrics
    TRAIN_PROGRESS.labels(job_id).set(update.fraction)
    _set_if_present(TRAIN_STEP, job_id, metrics, "step")
    _set_if_present(TRAIN_LOSS, job_id, metrics, "loss")
    _set_if_present(TRAIN_SAMPLES_RATE, job_id, metrics, "samples_per_s")
    sec_per_iter = metrics.get("sec_per_iter")
    if sec_per_iter:
        TRAIN_STEP_RATE.labels(job_id).set(1.0 / sec_per_iter)


def _set_if_present(gauge: Gauge, job_id: str, metrics: Mapping[str, float], name: str) -> None:
    value = metrics.get(name)
    if value is not None:
        gauge.labels(job_id).set(float(value))


def job_finished(
    job_id: str, kind: str, status: str, created_at: datetime, metrics: Mapping[str, Any]
) -> None:
    """A job reached its final status (called once, by whoever finished it)."""
    JOBS_FINISHED.labels(kind, status).inc()
    JOB_DURATION.labels(kind, status).observe(max(_seconds_since(created_at), 0.0))
    if status != "succeeded":
        return
    if kind == "train" and "psnr" in metrics:
        TRAIN_PSNR.labels(job_id).set(float(metrics["psnr"]))
    if kind == "render":
        RENDER_FRAMES.inc(float(metrics.get("frames", 0)))
        if "render_fps" in metrics:
            RENDER_FPS.set(float(metrics["render_fps"]))


def model_cache(hit: bool) -> None:
    RENDER_MODEL_CACHE.labels("hit" if hit else "miss").inc()


def _seconds_since(moment: datetime) -> float:
    # SQLite hands back naive datetimes; every time we store is UTC.
    aware = moment if moment.tzinfo else moment.replace(tzinfo=UTC)
    return (datetime.now(UTC) - aware).total_seconds()
