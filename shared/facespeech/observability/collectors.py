"""Scrape-time collectors: queue depth from the broker and job counts from the database.

Both read shared state, so every worker reports the same numbers; dashboards and alerts take
`max by (queue)` / `max by (kind, status)` over workers.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import redis
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from sqlalchemy import func, select

from facespeech.config import Settings
from facespeech.db.models import Job, JobStatus
from facespeech.db.session import session_scope

log = logging.getLogger(__name__)
# kombu's Redis transport keeps one list per queue and priority step; priority 0 is the bare
# queue name, the others are "<queue>\x06\x16<priority>" (kombu.transport.redis).
REDIS_PRIORITY_STEPS = (0, 3, 6, 9)
REDIS_PRIORITY_SEPARATOR = "\x06\x16"


def redis_queue_keys(queue: str) -> list[str]:
    return [queue if step == 0 else f"{queue}{REDIS_PRIORITY_SEPARATOR}{step}"
            for step in REDIS_PRIORITY_STEPS]


def filesystem_queue_length(folder: Path, queue: str) -> int:
    # kombu's filesystem transport writes one "<ms>_<uuid>.<queue>.msg" file per message.
    return sum(1 for _ in folder.glob(f"*.{queue}.msg"))


class QueueDepthCollector(Collector):
    """Messages waiting in each Celery queue (taken-but-unacked tasks are not counted)."""

    def __init__(self, settings: Settings, queues: tuple[str, ...]) -> None:
        self.settings = settings
        self.queues = queues
        self._redis: redis.Redis | None = None
        if not settings.is_embedded_broker:
            self._redis = redis.Redis.from_url(settings.broker_url, socket_timeout=2)

    def _lengths(self) -> dict[str, int]:
        if self._redis is None:
            folder = self.settings.broker_dir / "queue"
            return {queue: filesystem_queue_length(folder, queue) for queue in self.queues}
        pipe = self._redis.pipeline()
        for queue in self.queues:
            for key in redis_queue_keys(queue):
                pipe.llen(key)
        counts = pipe.execute()
        steps = len(REDIS_PRIORITY_STEPS)
        return {queue: sum(counts[i * steps:(i + 1) * steps])
                for i, queue in enumerate(self.queues)}

    def collect(self) -> Iterator[Metric]:
        depth = GaugeMetricFamily("facespeech_queue_depth", "Tasks waiting in a Celery queue",
                                  labels=["queue"])
        up = GaugeMetricFamily("facespeech_broker_up", "1 if the broker answered this scrape")
        try:
            lengths = self._lengths()
        except (redis.RedisError, OSError) as error:
            log.warning("queue depth: broker unreachable: %s", error)
            up.add_metric([], 0)
            yield up
            return
        for queue, length in lengths.items():
            depth.add_metric([queue], length)
        up.add_metric([], 1)
        yield depth
        yield up


class JobTableCollector(Collector):
    """Jobs by kind and status, jobs created, and the age of the oldest queued job."""

    def __init__(self, kinds: tuple[str, ...]) -> None:
        self.kinds = kinds

    def collect(self) -> Iterator[Metric]:
        try:
            with session_scope() as session:
                counts = session.execute(
                    select(Job.kind, Job.status, func.count()).group_by(Job.kind, Job.status)
                ).all()
                oldest = session.execute(
                    select(Job.kind, func.min(Job.created_at))
                    .where(Job.status == JobStatus.queued).group_by(Job.kind)
                ).all()
        except Exception as error:  # noqa: BLE001 - a scrape must not fail with the database
            log.warning("job metrics: database unreachable: %s", error)
            return
        by_status = {(str(kind), str(status)): n for kind, status, n in counts}
        jobs = GaugeMetricFamily("facespeech_jobs", "Jobs in the database by kind and status",
                                 labels=["kind", "status"])
        created = CounterMetricFamily("facespeech_jobs_created", "Jobs ever submitted",
                                      labels=["kind"])
        for kind in self.kinds:
            for status in JobStatus:
                jobs.add_metric([kind, status.value], by_status.get((kind, status.value), 0))
            total = sum(n for (k, _), n in by_status.items() if k == kind)
            created.add_metric([kind], total)
        backlog = GaugeMetricFamily(
            "facespeech_jobs_oldest_queued_age_seconds",
            "Age of the oldest job still waiting, by kind (0 when none waits)", labels=["kind"])
        ages = {str(kind): _age(moment) for kind, moment in oldest if moment is not None}
        for kind in self.kinds:
            backlog.add_metric([kind], ages.get(kind, 0.0))
        yield jobs
        yield created
        yield backlog


def _age(moment: datetime) -> float:
    aware = moment if moment.tzinfo else moment.replace(tzinfo=UTC)
    return max((datetime.now(UTC) - aware).total_seconds(), 0.0)
