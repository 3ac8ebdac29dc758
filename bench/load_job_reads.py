"""GET /v1/jobs/{id} at a fixed rate (open loop) against a real API process on PostgreSQL.

Latency is measured from each request's scheduled start, so a stalled server shows up in the
figures instead of slowing the load down (no coordinated omission).

    .venv/bin/python -m bench.load_job_reads --rate 200 --seconds 60
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import time
from urllib.parse import urlsplit

from bench.load_common import percentile, postgres_server, probe_jobs


async def _connection(
    host: str,
    port: int,
    request: bytes,
    schedule: asyncio.Queue[float],
    latencies: list[float],
    errors: list[int],
) -> None:
    """One keep-alive connection taking scheduled requests off the queue (a tiny raw HTTP/1.1
    client: httpx costs more CPU per request than the server on a 2-core machine)."""
    reader, writer = await asyncio.open_connection(host, port)
    while (scheduled := await schedule.get()) >= 0:
        try:
            writer.write(request)
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
            length = int(re.search(rb"content-length: (\d+)", head.lower()).group(1))  # type: ignore[union-attr]
            await asyncio.wait_for(reader.readexactly(length), 5)
            if not head.startswith(b"HTTP/1.1 200"):
                errors.append(1)
        except (TimeoutError, OSError, asyncio.IncompleteReadError, AttributeError):
            errors.append(1)
            writer.close()
            reader, writer = await asyncio.open_connection(host, port)
        latencies.append(time.perf_counter() - scheduled)
    writer.close()


async def _drive(
    base_url: str,
    path: str,
    headers: dict[str, str],
    rate: float,
    seconds: float,
    connections: int = 32,
) -> tuple[list[float], int, int]:
    """Open loop: requests are due at a fixed rate whatever the server does; latency counts
    from when a request was due, so queueing behind a slow server is in the figures."""
    url = urlsplit(base_url)
    lines = [f"GET {path} HTTP/1.1", f"Host: {url.netloc}"]
    lines += [f"{name}: {value}" for name, value in headers.items()]
    request = ("\r\n".join(lines) + "\r\n\r\n").encode()
    schedule: asyncio.Queue[float] = asyncio.Queue()
    latencies: list[float] = []
    errors: list[int] = []
    workers = [
        asyncio.create_task(
            _connection(
                url.hostname or "127.0.0.1", url.port or 80, request, schedule, latencies, errors
            )
        )
        for _ in range(connections)
    ]
    start = time.perf_counter()
    total = int(rate * seconds)
    for index in range(total):
        due = start + index / rate
        if (delay := due - time.perf_counter()) > 0:
            await asyncio.sleep(delay)
        schedule.put_nowait(due)
    for _ in workers:
        schedule.put_nowait(-1.0)
    await asyncio.gather(*workers)
    return latencies, len(errors), total


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rate", type=float, default=200.0)
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--redis", default="redis://127.0.0.1:6379/11")
    parser.add_argument("--api-workers", type=int, default=1)
    args = parser.parse_args()
    with postgres_server(args.redis, api_workers=args.api_workers) as server:
        job_id = probe_jobs(server.env, 1, 0.0)[0]
        # the job belongs to the probes tenant: read it with a key of that tenant
        key = _key_for_probe_tenant(server.env)
        headers = {"Authorization": f"Bearer {key}"}
        asyncio.run(_drive(server.base_url, f"/v1/jobs/{job_id}", headers, 20, 2))  # warm-up
        rss_before = server.rss_mb()
        latencies, errors, total = asyncio.run(
            _drive(server.base_url, f"/v1/jobs/{job_id}", headers, args.rate, args.seconds)
        )
        ms = [1000 * value for value in latencies]
        print(
            json.dumps(
                {
                    "bench": "job_reads",
                    "rate": args.rate,
                    "seconds": args.seconds,
                    "api_workers": args.api_workers,
                    "requests": total,
                    "errors": errors,
                    "p50_ms": round(percentile(ms, 0.50), 1),
                    "p95_ms": round(percentile(ms, 0.95), 1),
                    "p99_ms": round(percentile(ms, 0.99), 1),
                    "max_ms": round(max(ms), 1),
                    "server_rss_mb": [round(rss_before), round(server.rss_mb())],
                }
            )
        )


def _key_for_probe_tenant(env: dict[str, str]) -> str:
    from facespeech.localstack import new_api_key

    return new_api_key(env, "bench-probes")


if __name__ == "__main__":
    main()
