"""Fixtures shared by every test folder: an isolated embedded stack per test, shared data."""

from __future__ import annotations

import os
import shutil
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


def shared_file(relative: str) -> Path:
    path = SHARED_DATA / relative
    if not path.exists():
        pytest.skip(f"{path} is absent (the shared data folder sits beside the checkout)")
    return path


# `make install` unpacks Debian's prometheus package here (no root needed, nothing installed).
PROMETHEUS_TOOLS = Path(__file__).resolve().parents[1] / ".venv" / "tools" / "usr" / "bin"


def prometheus_tool(name: str) -> str:
    """The path of `prometheus` or `promtool`: on PATH, or where `make install` put it."""
    found = shutil.which(name) or shutil.which(name, path=str(PROMETHEUS_TOOLS))
    if found is None:
        pytest.skip(f"{name} is not installed (`make install` unpacks Debian's prometheus "
                    "package into .venv/tools; or apt-get install prometheus)")
    return found


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def clear_cached_settings() -> None:
    """Settings, engines, stores and the Celery app are read once per process; reset them."""
    from facespeech import storage
    from facespeech.config import get_settings
    from facespeech.db.session import engine_for
    from facespeech.jobs.celery_app import get_celery

    get_settings.cache_clear()
    engine_for.cache_clear()
    storage._default_store.cache_clear()
    get_celery.cache_clear()


@pytest.fixture
def embedded_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """Point every setting at a fresh data dir: SQLite, local store, filesystem broker."""
    data_dir = tmp_path / "facespeech"
    for name in list(os.environ):
        if name.startswith("FACESPEECH_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("FACESPEECH_DATA_DIR", str(data_dir))
    monkeypatch.setenv("FACESPEECH_DEVICE", "cpu")
    clear_cached_settings()
    yield data_dir
    clear_cached_settings()


def new_key(name: str) -> str:
    """A new API key for tenant `name` (created if new), straight through the database."""
    from facespeech.api.security import create_tenant_with_key
    from facespeech.db.session import session_scope

    with session_scope() as session:
        return create_tenant_with_key(session, name)[1]


@pytest.fixture
def client(embedded_env: Path) -> Iterator[Any]:
    """The API in-process on a fresh embedded stack (folders with other settings override it)."""
    from fastapi.testclient import TestClient

    from facespeech.api.app import create_app

    with TestClient(create_app()) as test_client:
        yield test_client


@pytest.fixture
def auth(client: Any) -> dict[str, str]:
    return {"Authorization": f"Bearer {new_key('tenant-a')}"}


@pytest.fixture
def other_auth(client: Any) -> dict[str, str]:
    return {"Authorization": f"Bearer {new_key('tenant-b')}"}


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Tests marked `gpu` run only where CUDA is (on the device machine)."""
    import torch

    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs CUDA (run it on the device machine)")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)
