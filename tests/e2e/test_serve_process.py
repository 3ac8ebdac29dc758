"""`facespeech serve` must not leave an orphan worker consuming the queue when it dies."""

from __future__ import annotations

import os
import signal
import sys
import time
from pathlib import Path

import pytest

from tests.e2e.conftest import Stack, _start


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="parent-death signal is Linux")
def test_worker_exits_when_serve_is_killed(tmp_path: Path) -> None:
    from tests.conftest import free_port
    from tests.e2e.conftest import _base_env

    port = free_port()
    stack: Stack = _start(_base_env(tmp_path / "data", port), port, tmp_path / "server.log")
    workers = _children(stack.server.pid)
    assert workers, "serve should start a worker process"
    stack.server.send_signal(signal.SIGKILL)
    stack.server.wait()
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and any(_alive(pid) for pid in workers):
        time.sleep(0.5)
    assert not any(_alive(pid) for pid in workers), "the worker outlived its serve process"


def _children(pid: int) -> list[int]:
    path = Path(f"/proc/{pid}/task/{pid}/children")
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        found = [int(child) for child in path.read_text().split()]
        if found:
            return found
        time.sleep(0.5)
    return []


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    status = Path(f"/proc/{pid}/status")
    return status.exists() and "zombie" not in status.read_text()
