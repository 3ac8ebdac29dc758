"""Prometheus metrics of the API process.

When PROMETHEUS_MULTIPROC_DIR is set (several uvicorn/gunicorn worker processes), the
metrics below live in prometheus_client's per-process files and /metrics, which renders the
default registry, reports the sum over all processes through a MultiProcessCollector.
prometheus_client itself switches on that variable at import, so we follow the same signal.
"""

from __future__ import annotations

import os
import time

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge, Histogram, multiprocess
from starlette.types import ASGIApp, Message, Receive, Scope, Send

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


EVENT_STREAMS = Gauge(
    "facespeech_event_streams_open", "Server-Sent Event streams of job timelines being served",
    multiprocess_mode="livesum", registry=LIVE_REGISTRY,
)


def _route_template(scope: Scope) -> str:
    # The template, not the path: ids in paths would explode the label cardinality.
    return getattr(scope.get("route"), "path", "unmatched")


class MetricsMiddleware:
    """Request count, latency and in-flight gauge per route template. A plain ASGI
    middleware: Starlette's BaseHTTPMiddleware adds a task and a stream per request, which
    cost a third of a cheap GET's time on two cores."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def send_and_note_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        IN_FLIGHT.inc()
        try:
            await self.app(scope, receive, send_and_note_status)
        finally:
            IN_FLIGHT.dec()
            route = _route_template(scope)
            REQUESTS.labels(scope["method"], route, str(status)).inc()
            LATENCY.labels(scope["method"], route).observe(time.perf_counter() - started)
