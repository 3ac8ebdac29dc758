"""N queued probe jobs (the `probe` job kind: no library work, a 0 s sleep) drain through a
real Celery worker on Redis and PostgreSQL with none lost or run twice.

    .venv/bin/python -m bench.load_drain --jobs 1000
"""

from __future__ import annotations

import argparse
import json
import time

import psycopg
from sqlalchemy import make_url

from bench.load_common import postgres_server, probe_jobs


def _counts(database_url: str) -> tuple[dict[str, int], int]:
    url = make_url(database_url).set(drivername="postgresql")
    with psycopg.connect(url.render_as_string(hide_password=False)) as connection:
        statuses = dict(
            connection.execute(
                "SELECT status, count(*) FROM jobs WHERE kind = 'probe' GROUP BY status"
            ).fetchall()
        )
        done = connection.execute(
            "SELECT count(*), count(DISTINCT job_id) FROM job_events WHERE kind = 'probe'"
        ).fetchone()
    assert done is not None
    if done[0] != done[1]:
        raise SystemExit(f"{done[0] - done[1]} probe jobs did their work twice")
    return statuses, int(done[0])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--jobs", type=int, default=1000)
    parser.add_argument("--redis", default="redis://127.0.0.1:6379/11")
    parser.add_argument("--timeout", type=float, default=900)
    args = parser.parse_args()
    import redis

    redis.Redis.from_url(args.redis).flushdb()
    with postgres_server(args.redis) as server:
        url = server.env["FACESPEECH_DATABASE_URL"]
        queued_at = time.perf_counter()
        probe_jobs(server.env, args.jobs, 0.0)
        queue_seconds = time.perf_counter() - queued_at
        server.start_worker()
        started = time.perf_counter()
        while time.perf_counter() - started < args.timeout:
            statuses, done = _counts(url)
            if statuses.get("succeeded", 0) == args.jobs:
                break
            time.sleep(1)
        seconds = time.perf_counter() - started
        statuses, done = _counts(url)
        print(
            json.dumps(
                {
                    "bench": "drain",
                    "jobs": args.jobs,
                    "enqueue_seconds": round(queue_seconds, 1),
                    "drain_seconds": round(seconds, 1),
                    "jobs_per_s": round(args.jobs / seconds, 1),
                    "statuses": statuses,
                    "work_done_once": done,
                    "lost": args.jobs - done,
                }
            )
        )


if __name__ == "__main__":
    main()
