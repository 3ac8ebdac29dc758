"""Per-tenant limits: request rate, active jobs, stored bytes. Each answers 429 + Retry-After.

The request rate is a token bucket per tenant in this API process: with N API replicas a
tenant gets up to N times the rate, which bounds abuse without a shared store on the hot path.
"""

from __future__ import annotations

import math
import threading
import time

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from facespeech.api.problems import Problem
from facespeech.config import Settings
from facespeech.db.models import Artifact, Dataset, Job, JobStatus, Tenant


class TokenBuckets:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._buckets: dict[str, tuple[float, float]] = {}  # tenant -> (tokens, at)

    def take(self, tenant_id: str, rate_per_s: float, burst: int) -> float:
        """0 if a request may pass now, else the seconds until one may."""
        with self._lock:
            now = time.monotonic()
            tokens, at = self._buckets.get(tenant_id, (float(burst), now))
            tokens = min(float(burst), tokens + (now - at) * rate_per_s)
            if tokens >= 1:
                self._buckets[tenant_id] = (tokens - 1, now)
                return 0.0
            self._buckets[tenant_id] = (tokens, now)
            return (1 - tokens) / rate_per_s


_buckets = TokenBuckets()


def check_rate(tenant: Tenant, settings: Settings) -> None:
    if settings.tenant_rate_per_s <= 0:
        return
    wait = _buckets.take(tenant.id, settings.tenant_rate_per_s, settings.tenant_rate_burst)
    if wait > 0:
        raise Problem(
            429,
            "Too Many Requests",
            f"more than {settings.tenant_rate_per_s:g} requests/s for this tenant",
            retry_after=max(1, math.ceil(wait)),
        )


def check_active_jobs(session: Session, tenant: Tenant, settings: Settings) -> None:
    limit = settings.tenant_max_active_jobs
    if limit <= 0:
        return
    active = session.scalar(
        select(func.count())
        .select_from(Job)
        .where(Job.tenant_id == tenant.id, Job.status.in_([JobStatus.queued, JobStatus.running]))
    )
    if (active or 0) >= limit:
        raise Problem(
            429,
            "Too Many Active Jobs",
            f"this tenant has {active} queued or running jobs; the limit is {limit}",
            retry_after=30,
        )


def stored_bytes(session: Session, tenant: Tenant) -> int:
    uploads = session.scalar(
        select(func.coalesce(func.sum(Dataset.size_bytes), 0)).where(Dataset.tenant_id == tenant.id)
    )
    artifacts = session.scalar(
        select(func.coalesce(func.sum(Artifact.size_bytes), 0)).where(
            Artifact.tenant_id == tenant.id
        )
    )
    return int(uploads or 0) + int(artifacts or 0)


def check_storage(session: Session, tenant: Tenant, settings: Settings, adding: int) -> None:
    limit = settings.tenant_max_storage_bytes
    if limit <= 0:
        return
    used = stored_bytes(session, tenant)
    if used + adding > limit:
        raise Problem(
            429,
            "Storage Quota Exceeded",
            f"this tenant stores {used} bytes; {adding} more would pass the limit of {limit}",
            retry_after=3600,
        )
