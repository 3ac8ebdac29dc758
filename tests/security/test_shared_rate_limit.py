"""The per-tenant request rate is one limit across API processes when Redis is there, and
the API keeps answering (per-process limit) when Redis is not."""

from __future__ import annotations

import uuid
from types import SimpleNamespace

import pytest
import redis

from facespeech.api.limits import RedisTokenBuckets, wait_for_token

REDIS_URL = "redis://127.0.0.1:6379/13"


@pytest.fixture
def redis_url() -> str:
    try:
        redis.Redis.from_url(REDIS_URL, socket_connect_timeout=1).ping()
    except redis.RedisError:
        pytest.skip("no Redis at 127.0.0.1:6379")
    return REDIS_URL


def test_two_api_processes_share_one_bucket(redis_url: str) -> None:
    tenant = f"t-{uuid.uuid4().hex}"
    one, two = RedisTokenBuckets(redis_url), RedisTokenBuckets(redis_url)  # two replicas
    waits = [bucket.take(tenant, 1.0, 3) for bucket in (one, two, one)]
    assert waits == [0.0, 0.0, 0.0]  # the burst, spent across both
    assert 0.5 < two.take(tenant, 1.0, 3) <= 1.0  # the fourth waits about 1/rate
    assert one.take(f"t-{uuid.uuid4().hex}", 1.0, 3) == 0.0  # another tenant is unaffected
    redis.Redis.from_url(redis_url).delete(f"facespeech:rate:{tenant}")


def test_unreachable_redis_falls_back_to_the_process_bucket() -> None:
    settings = SimpleNamespace(broker_url="redis://127.0.0.1:1/0", tenant_rate_per_s=1.0,
                               tenant_rate_burst=2)
    tenant = f"t-{uuid.uuid4().hex}"
    waits = [wait_for_token(tenant, settings) for _ in range(3)]  # type: ignore[arg-type]
    assert waits[:2] == [0.0, 0.0] and waits[2] > 0
