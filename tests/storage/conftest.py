"""Stores under test: a local directory and S3 on a real S3-protocol server (moto)."""

from __future__ import annotations

import socket
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from moto.server import ThreadedMotoServer

from facespeech.storage import LocalStore, ObjectStore
from facespeech.storage.s3 import S3Store

SECRET = "test-secret"
PUBLIC_URL = "http://testserver"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="session")
def moto_endpoint() -> Iterator[str]:
    port = _free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    yield f"127.0.0.1:{port}"
    server.stop()


@pytest.fixture
def s3_store(moto_endpoint: str) -> S3Store:
    # A bucket per test keeps tests independent on the one server.
    return S3Store(
        endpoint=moto_endpoint,
        access_key="testing",
        secret_key="testing",
        bucket=f"test-{uuid.uuid4().hex[:12]}",
        secure=False,
        region="us-east-1",
    )


@pytest.fixture
def local_store(tmp_path: Path) -> LocalStore:
    return LocalStore(tmp_path / "objects", secret_key=SECRET, public_url=PUBLIC_URL)


@pytest.fixture(params=["local", "s3"])
def store(request: pytest.FixtureRequest) -> ObjectStore:
    name = "local_store" if request.param == "local" else "s3_store"
    result: ObjectStore = request.getfixturevalue(name)
    return result
