"""A real stack in subprocesses: `facespeech serve` (API + a Celery worker process).

Two flavours: the embedded default (SQLite, local store, filesystem broker) and the full
stack's protocols (PostgreSQL, Redis, an S3 server), started fresh for the test module.
"""

from __future__ import annotations

import os
import subprocess
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from facespeech.localstack import new_api_key, start_serve, wait_ready
from tests.conftest import free_port
from tests.fitting.bfm_file import write_model

POSTGRES_ADMIN = "postgresql://postgres@127.0.0.1:5432/postgres"
REDIS_URL = "redis://127.0.0.1:6379/13"


@dataclass
class Stack:
    base_url: str
    api_key: str
    env: dict[str, str]
    server: subprocess.Popen[bytes]
    log: Path

    def alive(self) -> bool:
        return self.server.poll() is None


def _base_env(data_dir: Path, port: int) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("FACESPEECH_")}
    env.update(
        FACESPEECH_DATA_DIR=str(data_dir),
        FACESPEECH_DEVICE="cpu",
        FACESPEECH_PUBLIC_URL=f"http://127.0.0.1:{port}",
        PYTHONUNBUFFERED="1",
    )
    return env


def _start(env: dict[str, str], port: int, log: Path) -> Stack:
    key = new_api_key(env, "e2e")
    server = start_serve(env, port, log)
    base_url = f"http://127.0.0.1:{port}"
    wait_ready(base_url, server, log)
    return Stack(base_url, key, env, server, log)


def _stop(stack: Stack) -> None:
    stack.server.terminate()
    try:
        stack.server.wait(timeout=60)
    except subprocess.TimeoutExpired:
        os.killpg(stack.server.pid, 9)


@pytest.fixture(scope="module")
def embedded_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    root = tmp_path_factory.mktemp("embedded")
    port = free_port()
    env = _base_env(root / "data", port)
    # every video these flows upload is also fitted with a (synthetic) Basel Face Model, as
    # it is where an operator supplies the file
    env["FACESPEECH_BFM_MODEL"] = str(write_model(root / "BFM09_model_info.mat"))
    stack = _start(env, port, root / "server.log")
    yield stack
    _stop(stack)


def _postgres_database() -> Iterator[str]:
    psycopg = pytest.importorskip("psycopg")
    name = f"facespeech_e2e_{uuid.uuid4().hex[:8]}"
    try:
        admin = psycopg.connect(POSTGRES_ADMIN, autocommit=True)
    except psycopg.OperationalError as error:
        pytest.skip(f"PostgreSQL at 127.0.0.1:5432 is unreachable: {error}")
    admin.execute(f'CREATE DATABASE "{name}"')
    try:
        yield f"postgresql+psycopg://postgres@127.0.0.1:5432/{name}"
    finally:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.close()


def _fresh_redis() -> None:
    redis = pytest.importorskip("redis")
    try:
        redis.Redis.from_url(REDIS_URL).flushdb()
    except redis.ConnectionError as error:
        pytest.skip(f"Redis at 127.0.0.1:6379 is unreachable: {error}")


@pytest.fixture(scope="module")
def full_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    from moto.server import ThreadedMotoServer

    _fresh_redis()
    s3_port = free_port()
    moto = ThreadedMotoServer(ip_address="127.0.0.1", port=s3_port)
    moto.start()
    database = _postgres_database()
    try:
        root = tmp_path_factory.mktemp("full")
        port = free_port()
        env = _base_env(root / "data", port)
        env.update(
            FACESPEECH_DATABASE_URL=next(database),
            FACESPEECH_BROKER_URL=REDIS_URL,
            FACESPEECH_STORE_BACKEND="s3",
            FACESPEECH_S3_ENDPOINT=f"127.0.0.1:{s3_port}",
            FACESPEECH_S3_ACCESS_KEY="testing",
            FACESPEECH_S3_SECRET_KEY="testing",
            FACESPEECH_S3_BUCKET="facespeech-e2e",
        )
        stack = _start(env, port, root / "server.log")
        yield stack
        _stop(stack)
    finally:
        database.close()
        moto.stop()
