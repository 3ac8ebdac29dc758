"""A job's timeline as Server-Sent Events: events as they are written, `end` once final."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

from fastapi.testclient import TestClient

from facespeech.api import event_stream
from tests.api.test_api import _queued_run

SSE = {"Accept": "text/event-stream"}


def _messages(lines: list[str]) -> list[dict[str, str]]:
    messages, current = [], {}
    for line in lines:
        if not line:
            if current:
                messages.append(current)
            current = {}
        elif not line.startswith(":"):
            field, _, value = line.partition(": ")
            current[field] = value
    return messages


def test_a_finished_jobs_stream_replays_and_ends(
    client: TestClient, auth: dict[str, str], small_video: Path
) -> None:
    job = _queued_run(client, auth, small_video)
    client.post(f"/v1/jobs/{job['id']}/cancel", headers=auth)
    with client.stream("GET", f"/v1/jobs/{job['id']}/events", headers={**auth, **SSE}) as reply:
        assert reply.status_code == 200
        assert reply.headers["content-type"].startswith("text/event-stream")
        assert reply.headers["x-accel-buffering"] == "no"
        messages = _messages(list(reply.iter_lines()))
    listed = client.get(f"/v1/jobs/{job['id']}/events", headers=auth).json()["data"]
    assert [int(m["id"]) for m in messages[:-1]] == [e["id"] for e in listed]
    assert json.loads(messages[0]["data"])["message"] == listed[0]["message"]
    assert messages[-1] == {"event": "end", "data": '{"status": "canceled"}'}
    # Last-Event-ID resumes after what a client already has
    with client.stream("GET", f"/v1/jobs/{job['id']}/events",
                       headers={**auth, **SSE, "Last-Event-ID": str(listed[-2]["id"])}) as reply:
        resumed = _messages(list(reply.iter_lines()))
    assert [int(m["id"]) for m in resumed[:-1]] == [listed[-1]["id"]]


def test_a_live_stream_sends_new_events_as_they_happen(
    client: TestClient, auth: dict[str, str], small_video: Path,
    monkeypatch,  # type: ignore[no-untyped-def]
) -> None:
    monkeypatch.setattr(event_stream, "POLL_S", 0.05)
    job = _queued_run(client, auth, small_video)
    seen: list[tuple[float, str]] = []

    def cancel_later() -> None:
        time.sleep(0.5)
        client.post(f"/v1/jobs/{job['id']}/cancel", headers=auth)

    threading.Thread(target=cancel_later).start()
    started = time.monotonic()
    with client.stream("GET", f"/v1/jobs/{job['id']}/events", headers={**auth, **SSE}) as reply:
        for line in reply.iter_lines():
            if line.startswith(("data:", "event:")):
                seen.append((time.monotonic() - started, line))
    first_queued = next(t for t, line in seen if '"queued"' in line)
    cancel = next(t for t, line in seen if "cancel requested" in line)
    assert first_queued < 0.4 < cancel  # the stream was open before the cancel happened
    assert seen[-1][1] == 'data: {"status": "canceled"}'


def test_another_tenant_gets_404_not_a_stream(
    client: TestClient, auth: dict[str, str], other_auth: dict[str, str],
    small_video: Path,
) -> None:
    job = _queued_run(client, auth, small_video)
    reply = client.get(f"/v1/jobs/{job['id']}/events", headers={**other_auth, **SSE})
    assert reply.status_code == 404
    assert reply.headers["content-type"] == "application/problem+json"


def test_open_streams_per_tenant_are_bounded(
    client: TestClient, auth: dict[str, str], small_video: Path,
    monkeypatch,  # type: ignore[no-untyped-def]
) -> None:
    from tests.conftest import clear_cached_settings

    monkeypatch.setenv("FACESPEECH_TENANT_MAX_EVENT_STREAMS", "1")
    monkeypatch.setattr(event_stream, "POLL_S", 0.05)
    clear_cached_settings()
    job = _queued_run(client, auth, small_video)
    url = f"/v1/jobs/{job['id']}/events"
    ended = threading.Event()

    def hold_a_stream() -> None:
        with client.stream("GET", url, headers={**auth, **SSE}) as reply:
            for _ in reply.iter_lines():
                pass
        ended.set()

    threading.Thread(target=hold_a_stream, daemon=True).start()
    deadline = time.monotonic() + 10
    while sum(event_stream._open_streams.values()) < 1 and time.monotonic() < deadline:
        time.sleep(0.02)
    assert 'facespeech_event_streams_open 1.0' in client.get("/metrics").text
    second = client.get(url, headers={**auth, **SSE})
    assert second.status_code == 429 and second.headers["retry-after"] == "5"
    assert client.get(url, headers=auth).status_code == 200  # the plain list still answers
    client.post(f"/v1/jobs/{job['id']}/cancel", headers=auth)
    assert ended.wait(10)
    with client.stream("GET", url, headers={**auth, **SSE}) as reply:
        assert reply.status_code == 200


def test_a_stream_closes_after_its_longest_time_without_an_end(
    client: TestClient, auth: dict[str, str], small_video: Path
) -> None:
    import asyncio

    from facespeech.api.security import tenant_for_key
    from facespeech.db.session import session_scope

    job = _queued_run(client, auth, small_video)
    with session_scope() as session:
        tenant = tenant_for_key(session, auth["Authorization"].removeprefix("Bearer "))
        assert tenant is not None
        tenant_id = tenant.id

    async def collect() -> list[str]:
        stream = event_stream.job_events(tenant_id, job["id"], 0, max_s=0.3, poll_s=0.05)
        return [message async for message in stream]

    started = time.monotonic()
    messages = asyncio.run(collect())
    assert time.monotonic() - started < 5
    assert messages and not any(m.startswith("event: end") for m in messages)
    assert sum(event_stream._open_streams.values()) == 0
