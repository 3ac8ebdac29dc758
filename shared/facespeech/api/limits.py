"""Per-tenant limits: request rate, active jobs, stored bytes. Each answers 429 + Retry-After.

The request rate is a token bucket per tenant. With a Redis broker (the full stack) the
buckets live in Redis, updated by one Lua script per request, so N API replicas share one
limit; embedded, or while Redis does not answer, each process keeps its own (a tenant then
gets up to N times the rate: the API stays up, and the bound holds per process).
"""

from __future__ import annotations

import logging
import math
import threading
import time
from functools import lru_cache
from typing import Any

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


# KEYS[1] = bucket; ARGV = rate/s, burst. Redis's own clock, so replicas agree on "now".
_TAKE_SCRIPT = """
local rate, burst = tonumber(ARGV[1]), tonumber(ARGV[2])
local clock = redis.call('TIME')
local now = tonumber(clock[1]) + tonumber(clock[2]) / 1e6
local state = redis.call('HMGET', KEYS[1], 'tokens', 'at')
local tokens, at = tonumber(state[1]) or burst, tonumber(state[2]) or now
tokens = math.min(burst, tokens + math.max(0, now - at) * rate)
local wait = 0
if tokens >= 1 then tokens = tokens - 1 else wait = (1 - tokens) / rate end
redis.call('HSET', KEYS[1], 'tokens', tostring(tokens), 'at', tostring(now))
redis.call('EXPIRE', KEYS[1], math.ceil(burst / rate) + 1)
return tostring(wait)
"""
log = logging.getLogger(__name__)


class RedisTokenBuckets:
    """The same buckets in Redis, shared by every API process that points at it."""

    def __init__(self, url: str, prefix: str = "facespeech:rate:") -> None:
        import redis

        self._client = redis.Redis.from_url(url, socket_timeout=0.2, socket_connect_timeout=0.2)
        self._take: Any = self._client.register_script(_TAKE_SCRIPT)
        self._prefix = prefix

    def take(self, tenant_id: str, rate_per_s: float, burst: int) -> float:
        return float(self._take(keys=[self._prefix + tenant_id], args=[rate_per_s, burst]))


_local_buckets = TokenBuckets()
# After Redis fails, requests use the local buckets for this long instead of each waiting
# out Redis's timeout again.
SHARED_RETRY_AFTER_S = 5.0
_shared_down_until = 0.0


@lru_cache(maxsize=4)
def _shared_buckets(broker_url: str) -> RedisTokenBuckets | None:
    if not broker_url.startswith(("redis://", "rediss://")):
        return None
    return RedisTokenBuckets(broker_url)


def wait_for_token(tenant_id: str, settings: Settings) -> float:
    """Seconds until this tenant may make a request (0: now), from the shared buckets where
    there are some and they answer, else this process's."""
    global _shared_down_until
    rate, burst = settings.tenant_rate_per_s, settings.tenant_rate_burst
    shared = _shared_buckets(settings.broker_url)
    if shared is not None and time.monotonic() >= _shared_down_until:
        try:
            return shared.take(tenant_id, rate, burst)
        except Exception as error:  # noqa: BLE001 - redis errors: fall back, never fail a request
            _shared_down_until = time.monotonic() + SHARED_RETRY_AFTER_S
            log.warning("shared rate limit unavailable (%s); this process's for %g s",
                        error, SHARED_RETRY_AFTER_S)
    return _local_buckets.take(tenant_id, rate, burst)


def check_rate(tenant: Tenant, settings: Settings) -> None:
    if settings.tenant_rate_per_s <= 0:
        return
    wait = wait_for_token(tenant.id, settings)
    if wait > 0:
        raise Problem(
            429,
            "Too Many Requests",
            f"more than {settings.tenant_rate_per_s:g} requests/s for this tenant",
            retry_after=max(1, math.ceil(wait)),
        )


def active_jobs(session: Session, tenant: Tenant) -> int:
    """The tenant's queued and running jobs."""
    return session.scalar(
        select(func.count())
        .select_from(Job)
        .where(Job.tenant_id == tenant.id, Job.status.in_([JobStatus.queued, JobStatus.running]))
    ) or 0


def check_active_jobs(session: Session, tenant: Tenant, settings: Settings) -> None:
    limit = settings.tenant_max_active_jobs
    if limit <= 0:
        return
    active = active_jobs(session, tenant)
    if active >= limit:
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
