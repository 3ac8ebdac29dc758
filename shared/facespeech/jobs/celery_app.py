"""The Celery app. Job state lives in the database; the broker only carries job ids."""

from __future__ import annotations

from functools import lru_cache
from typing import Any

from celery import Celery
from kombu import Queue

from facespeech.config import Settings, get_settings

QUEUES = ("preprocess", "train", "render")
TASK_QUEUES = {
    "facespeech.preprocess": "preprocess",
    "facespeech.train": "train",
    "facespeech.render": "render",
    "facespeech.probe": "preprocess",
}


def _transport_options(settings: Settings) -> dict[str, Any]:
    if settings.is_embedded_broker:
        # kombu's filesystem transport: a real broker between processes, no server needed.
        folder = settings.broker_dir
        for sub in ("queue", "processed", "control"):
            (folder / sub).mkdir(parents=True, exist_ok=True)
        return {
            "data_folder_in": str(folder / "queue"),
            "data_folder_out": str(folder / "queue"),
            "processed_folder": str(folder / "processed"),
            # kombu's default is ./control in the working directory, wherever that is
            "control_folder": str(folder / "control"),
            "store_processed": False,
            # kombu polls the folder once a second by default: a second of every job's start
            # (a render of a few seconds of speech waited 1 s in the queue); a listing is cheap.
            "polling_interval": 0.1,
        }
    # Redis redelivers an unacked task after this long, so it must exceed the longest task.
    return {"visibility_timeout": settings.broker_visibility_timeout_s}


def make_celery(settings: Settings | None = None) -> Celery:
    settings = settings or get_settings()
    app = Celery("facespeech", broker=settings.broker_url, include=["facespeech.jobs.tasks"])
    app.conf.update(
        task_queues=[Queue(name) for name in QUEUES],
        task_routes={name: {"queue": queue} for name, queue in TASK_QUEUES.items()},
        task_default_queue="preprocess",
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        task_ignore_result=True,
        broker_transport_options=_transport_options(settings),
        broker_connection_retry_on_startup=True,
        worker_hijack_root_logger=False,
        worker_send_task_events=False,
        task_serializer="json",
        accept_content=["json"],
    )
    return app


@lru_cache(maxsize=1)
def get_celery() -> Celery:
    """The process's app, built from Settings on first use (tests clear the cache)."""
    app = make_celery()
    app.set_default()
    return app
