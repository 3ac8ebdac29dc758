"""A real API process (`facespeech serve`) on PostgreSQL for the load benches, and helpers.

Loopback only, bounded: each bench creates its own database (dropped at the end), starts
the server with the rate limit off, and reports figures as one JSON line.
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import tempfile
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from facespeech.localstack import new_api_key, start_serve, wait_ready

POSTGRES_ADMIN = "postgresql://postgres@127.0.0.1:5432/postgres"


@dataclass
class Server:
    base_url: str
    api_key: str
    env: dict[str, str]
    process: subprocess.Popen[bytes]
    workers: list[subprocess.Popen[bytes]]

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.api_key}"}

    def rss_mb(self) -> float:
        """Resident memory of the API process and its children (uvicorn's workers)."""
        return sum(map(_rss_kb, _process_tree(self.process.pid))) / 1024

    def start_worker(self, queues: str = "preprocess") -> subprocess.Popen[bytes]:
        worker = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "facespeech.cli",
                "worker",
                "--queues",
                queues,
                "--metrics-port",
                "0",
                "--loglevel",
                "WARNING",
            ],
            env=self.env,
            start_new_session=True,
        )
        self.workers.append(worker)
        return worker


def _process_tree(pid: int) -> list[int]:
    children = Path(f"/proc/{pid}/task/{pid}/children")
    found = [pid]
    if children.exists():
        for child in children.read_text().split():
            found += _process_tree(int(child))
    return found


def _rss_kb(pid: int) -> int:
    status = Path(f"/proc/{pid}/status")
    if not status.exists():
        return 0
    for line in status.read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextlib.contextmanager
def postgres_server(broker_url: str, api_workers: int = 1, **settings: str) -> Iterator[Server]:
    name = f"facespeech_bench_{uuid.uuid4().hex[:8]}"
    import psycopg  # here: the render bench uses this module where PostgreSQL is absent

    admin = psycopg.connect(POSTGRES_ADMIN, autocommit=True)
    admin.execute(f'CREATE DATABASE "{name}"')
    data_dir = Path(tempfile.mkdtemp(prefix="facespeech-bench-"))
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("FACESPEECH_")}
    env.update(
        FACESPEECH_DATA_DIR=str(data_dir),
        FACESPEECH_DATABASE_URL=f"postgresql+psycopg://postgres@127.0.0.1:5432/{name}",
        FACESPEECH_BROKER_URL=broker_url,
        FACESPEECH_DEVICE="cpu",
        FACESPEECH_TENANT_RATE_PER_S="0",
        FACESPEECH_TENANT_MAX_ACTIVE_JOBS="0",
        FACESPEECH_TENANT_MAX_STORAGE_BYTES="0",
        FACESPEECH_PUBLIC_URL=f"http://127.0.0.1:{port}",
        **{f"FACESPEECH_{k.upper()}": v for k, v in settings.items()},
    )
    key = new_api_key(env, "bench")
    process = start_serve(env, port, None, worker=False, api_workers=api_workers)
    server = Server(f"http://127.0.0.1:{port}", key, env, process, [])
    try:
        wait_ready(server.base_url, process)
        yield server
    finally:
        for child in [*server.workers, process]:
            child.terminate()
            with contextlib.suppress(subprocess.TimeoutExpired):
                child.wait(timeout=30)
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.close()
        subprocess.run(["rm", "-rf", str(data_dir)], check=False)




def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))] if ordered else 0.0


def probe_jobs(env: dict[str, str], count: int, seconds: float) -> list[str]:
    """Create probe jobs through the service layer in a child process with the server's env."""
    code = (
        "import sys\n"
        "from facespeech.api.security import create_tenant_with_key\n"
        "from facespeech.api.service import create_probe_job\n"
        "from facespeech.db.session import session_scope\n"
        "with session_scope() as s:\n"
        "    t, _ = create_tenant_with_key(s, 'bench-probes')\n"
        f"    ids = [create_probe_job(s, t, {seconds}).id for _ in range({count})]\n"
        "print('\\n'.join(ids))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, check=True, capture_output=True, text=True
    ).stdout
    return out.split()
