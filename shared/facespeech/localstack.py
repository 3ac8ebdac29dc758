"""A local stack in subprocesses: an API key, `facespeech serve`, and waiting until it is ready.

Used by `facespeech demo`, the end-to-end and reliability tests and the load benches, so they
all start the product the same way a user does.
"""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Mapping
from pathlib import Path

import httpx


def new_api_key(env: Mapping[str, str], tenant: str) -> str:
    """A fresh key for `tenant` (created if new), from the CLI with this environment."""
    result = subprocess.run(
        [sys.executable, "-m", "facespeech.cli", "create-tenant", tenant],
        env=dict(env), check=True, capture_output=True, text=True,
    )
    return result.stdout.strip().splitlines()[-1]


def start_serve(
    env: Mapping[str, str], port: int, log: Path | None, worker: bool = True, api_workers: int = 1
) -> subprocess.Popen[bytes]:
    """`facespeech serve` in its own process group (so it can be killed as a whole)."""
    command = [sys.executable, "-m", "facespeech.cli", "serve", "--port", str(port),
               "--api-workers", str(api_workers), "--worker" if worker else "--no-worker"]
    sink = log.open("ab") if log else subprocess.DEVNULL
    try:
        return subprocess.Popen(command, env=dict(env), stdout=sink, stderr=subprocess.STDOUT,
                                start_new_session=True)
    finally:
        if log:
            sink.close()  # type: ignore[union-attr]


def wait_ready(
    base_url: str, process: subprocess.Popen[bytes], log: Path | None = None,
    timeout_s: float = 120.0,
) -> None:
    """Return once /readyz answers 200; raise with the log's tail if the process dies first."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"the server exited with code {process.returncode}{_tail(log)}")
        try:
            if httpx.get(f"{base_url}/readyz", timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.5)
    raise RuntimeError(f"{base_url} was not ready within {timeout_s:.0f} s{_tail(log)}")


def _tail(log: Path | None) -> str:
    return f"; log {log}:\n{log.read_text(errors='replace')[-3000:]}" if log else ""
