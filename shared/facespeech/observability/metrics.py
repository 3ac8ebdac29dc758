"""Prometheus metrics of the API process.

When PROMETHEUS_MULTIPROC_DIR is set (several uvicorn/gunicorn worker processes), the
metrics below live in prometheus_client's per-process files and /metrics, which renders the
default registry, reports the sum over all processes through a MultiProcessCollector.
prometheus_client itself switches on that variable at import, so we follow the same signal.
"""

from __future__ import annotations

import os
import time
from collections.abc import Awaitable, Callable

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge, Histogram, multiprocess
from starlette.requests import Request
from starlette.responses import Response

MULTIPROCESS = "PROMETHEUS_MULTIPROC_DIR" in os.environ
# In multiprocess mode the live objects must not be in the registry /metrics renders:
# the collector reads every process's files instead, this one's included.
LIVE_REGISTRY: CollectorRegistry | None = None if MULTIPROCESS else REGISTRY
if MULTIPROCESS:
    multiprocess.MultiProcessCollector(REGISTRY)

REQUESTS = Counter(
    "facespeech_http_requests_total", "HTTP requests", ["method", "route", "status"],
    registry=LIVE_REGISTRY,
)
LATENCY = Histogram(
    "facespeech_http_request_duration_seconds", "HTTP request latency", ["method", "route"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
    registry=LIVE_REGISTRY,
)
IN_FLIGHT = Gauge(
    "facespeech_http_requests_in_flight", "HTTP requests being served",
    multiprocess_mode="livesum", registry=LIVE_REGISTRY,
)


def _route_template(request: Request) -> str:
    # The template, not the path: ids in paths would explode the label cardinality.
    route = request.scope.get("route")
    return getattr(route, "path", "unmatched")


async def metrics_middleware(
    request: Request, call_next: Callable[[Request], Awaitable[Response]]
) -> Response:
    started = time.perf_counter()
    IN_FLIGHT.inc()
    status = 500
    try:
        response = await call_next(request)
        status = response.status_code
        return response
    finally:
        IN_FLIGHT.dec()
        route = _route_template(request)
        REQUESTS.labels(request.method, route, str(status)).inc()
        LATENCY.labels(request.method, route).observe(time.perf_counter() - started)
