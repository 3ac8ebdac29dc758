"""A job's timeline as Server-Sent Events: `GET /v1/jobs/{id}/events` with
`Accept: text/event-stream` sends each event as it is written and ends once the job is final.

The database is the only source: the stream polls it for events newer than the last one
sent, so it works the same with any number of API replicas and workers. `Last-Event-ID`
(sent by SSE clients when they reconnect) resumes after the last event received.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections import Counter
from collections.abc import AsyncIterator

from starlette.concurrency import run_in_threadpool

from facespeech.api import service
from facespeech.api.problems import Problem
from facespeech.api.schemas import JobEventPublic
from facespeech.config import Settings
from facespeech.db.models import JobStatus, Tenant
from facespeech.db.session import session_scope
from facespeech.observability.metrics import EVENT_STREAMS

EVENT_STREAM = "text/event-stream"
POLL_S = 1.0
# A comment line now and then keeps proxies from closing a quiet stream.
HEARTBEAT_S = 15.0
BATCH = 200


# Streams open in this process, per tenant. Only the event loop's thread touches it.
_open_streams: Counter[str] = Counter()


def wants_stream(accept: str) -> bool:
    return EVENT_STREAM in accept.lower()


def check_stream_slot(tenant_id: str, settings: Settings) -> None:
    """429 when the tenant already holds its limit of open streams in this process."""
    limit = settings.tenant_max_event_streams
    if limit and _open_streams[tenant_id] >= limit:
        raise Problem(429, "Too Many Event Streams",
                      f"this tenant has {limit} event streams open; close one or poll instead",
                      retry_after=5)


def _new_events(tenant_id: str, job_id: str, after: int) -> tuple[JobStatus, list[JobEventPublic]]:
    """The job's status, then the events after `after`: read in this order, a final status
    means every event of the job is already in the list (both are written together)."""
    with session_scope() as session:
        tenant = session.get(Tenant, tenant_id)
        assert tenant is not None
        status = service.get_job(session, tenant, job_id).status
        rows = service.list_events(session, tenant, job_id, after, BATCH)
        return status, [JobEventPublic.model_validate(row) for row in rows]


def _message(event: JobEventPublic) -> str:
    return f"id: {event.id}\nevent: {event.kind}\ndata: {event.model_dump_json()}\n\n"


async def job_events(tenant_id: str, job_id: str, after: int, max_s: float,
                     poll_s: float | None = None) -> AsyncIterator[str]:
    """The stream: events after `after` as they come, `end` once the job is final; after
    `max_s` it just closes (an SSE client reconnects with Last-Event-ID)."""
    _open_streams[tenant_id] += 1
    EVENT_STREAMS.inc()
    try:
        started = beat = time.monotonic()
        while time.monotonic() - started < max_s:
            status, events = await run_in_threadpool(_new_events, tenant_id, job_id, after)
            for event in events:
                after = event.id
                yield _message(event)
            if status.is_final and len(events) < BATCH:
                yield f"event: end\ndata: {json.dumps({'status': status.value})}\n\n"
                return
            if time.monotonic() - beat >= HEARTBEAT_S:
                beat = time.monotonic()
                yield ": still running\n\n"
            if len(events) < BATCH:
                await asyncio.sleep(POLL_S if poll_s is None else poll_s)
    finally:
        _open_streams[tenant_id] -= 1
        EVENT_STREAMS.dec()
