"""N concurrent uploads of S bytes each to POST /v1/datasets (raw body, streamed) against a
real API process on PostgreSQL with the local store; reports the server's peak RSS, sampled
every 50 ms, and checks every stored sha256.

Each body is a plain tar of one large member in the dataset layout: the API checks its
member list (no media decode, nothing unpacked) and stores it as a dataset archive, so
what is measured is the streaming path, not preprocessing.

    .venv/bin/python -m bench.load_uploads --count 20 --megabytes 200
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import os
import tarfile
import threading
import time
from collections.abc import AsyncIterator

import httpx

from bench.load_common import postgres_server

CHUNK = 1024 * 1024
TAR_BLOCK = 512


def _body(seed: int, megabytes: int) -> tuple[list[bytes], str]:
    """The chunks of one upload: a tar header, `megabytes` MiB of a 1 MiB block seeded per
    upload (one member, images/bench/00001.jpg), and the tar's two closing blocks."""
    block = hashlib.sha256(str(seed).encode()).digest() * (CHUNK // 32)
    member = tarfile.TarInfo("images/bench/00001.jpg")
    member.size = megabytes * CHUNK
    chunks = [member.tobuf(format=tarfile.GNU_FORMAT), *[block] * megabytes,
              bytes(2 * TAR_BLOCK)]
    digest = hashlib.sha256()
    for chunk in chunks:
        digest.update(chunk)
    return chunks, digest.hexdigest()


async def _upload(client: httpx.AsyncClient, chunks: list[bytes]) -> dict[str, object]:
    async def stream() -> AsyncIterator[bytes]:
        for chunk in chunks:
            yield chunk

    response = await client.post("/v1/datasets?filename=big.tar", content=stream())
    response.raise_for_status()
    return dict(response.json())


async def _run(base_url: str, headers: dict[str, str], count: int, megabytes: int) -> list[bool]:
    bodies = [_body(seed, megabytes) for seed in range(count)]
    async with httpx.AsyncClient(base_url=base_url, headers=headers, timeout=600) as client:
        results = await asyncio.gather(*(_upload(client, chunks) for chunks, _ in bodies))
    return [result["sha256"] == digest for result, (_, digest) in zip(results, bodies, strict=True)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--count", type=int, default=20)
    parser.add_argument("--megabytes", type=int, default=200)
    parser.add_argument("--redis", default="redis://127.0.0.1:6379/11")
    args = parser.parse_args()
    with postgres_server(args.redis, max_upload_bytes=str((args.megabytes + 2) * CHUNK)) as server:
        idle = server.rss_mb()
        peak = [idle]
        done = threading.Event()

        def sample() -> None:
            while not done.wait(0.05):
                peak[0] = max(peak[0], server.rss_mb())

        threading.Thread(target=sample, daemon=True).start()
        started = time.perf_counter()
        checks = asyncio.run(_run(server.base_url, server.headers, args.count, args.megabytes))
        seconds = time.perf_counter() - started
        done.set()
        total_mb = args.count * args.megabytes
        print(
            json.dumps(
                {
                    "bench": "uploads",
                    "count": args.count,
                    "megabytes_each": args.megabytes,
                    "seconds": round(seconds, 1),
                    "throughput_mb_s": round(total_mb / seconds, 1),
                    "checksums_ok": sum(checks),
                    "server_rss_mb_idle": round(idle),
                    "server_rss_mb_peak": round(peak[0]),
                    "cpus": os.cpu_count(),
                }
            )
        )


if __name__ == "__main__":
    main()
