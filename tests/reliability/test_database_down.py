"""PostgreSQL refuses every connection for a while: the API answers 503 + Retry-After as
problem+json and recovers by itself; a worker's state write waits and lands afterwards."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import make_url

from tests.conftest import clear_cached_settings
from tests.e2e.conftest import POSTGRES_ADMIN


class Outage:
    """Makes one database refuse connections (ALLOW_CONNECTIONS false + terminate backends)."""

    def __init__(self, url: str) -> None:
        import psycopg

        self.name = make_url(url).database
        self.admin = psycopg.connect(POSTGRES_ADMIN, autocommit=True)

    def begin(self) -> None:
        self.admin.execute(f'ALTER DATABASE "{self.name}" ALLOW_CONNECTIONS false')
        self.admin.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s",
            (self.name,),
        )

    def end(self) -> None:
        self.admin.execute(f'ALTER DATABASE "{self.name}" ALLOW_CONNECTIONS true')


@pytest.fixture
def outage_env(
    embedded_env: Path, postgres_url: str, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Outage]:
    monkeypatch.setenv("FACESPEECH_DATABASE_URL", postgres_url)
    monkeypatch.setenv("FACESPEECH_DB_RETRY_S", "30")
    clear_cached_settings()
    outage = Outage(postgres_url)
    yield outage
    outage.end()
    outage.admin.close()


def test_api_answers_503_then_recovers(outage_env: Outage) -> None:
    from facespeech.api.app import create_app
    from facespeech.api.security import create_tenant_with_key
    from facespeech.db.session import session_scope

    with TestClient(create_app()) as client:
        with session_scope() as session:
            key = create_tenant_with_key(session, "db-outage")[1]
        auth = {"Authorization": f"Bearer {key}"}
        assert client.get("/v1/jobs", headers=auth).status_code == 200
        outage_env.begin()
        for path in ("/v1/jobs", "/readyz"):
            down = client.get(path, headers=auth)
            assert down.status_code == 503, down.text
            assert down.headers["content-type"] == "application/problem+json"
            assert int(down.headers["retry-after"]) > 0
            assert "password" not in down.text and "postgres@" not in down.text
        assert client.get("/healthz").status_code == 200  # liveness needs no database
        outage_env.end()
        back = client.get("/v1/jobs", headers=auth)  # no restart, no manual reconnect
        assert back.status_code == 200, back.text


def test_worker_state_writes_wait_for_the_database(outage_env: Outage) -> None:
    from facespeech.api.security import create_tenant_with_key
    from facespeech.db.migrate import upgrade_head
    from facespeech.db.models import Job, JobEvent, JobKind, JobStatus
    from facespeech.db.session import session_scope
    from facespeech.jobs import state

    upgrade_head()
    with session_scope() as session:
        tenant, _ = create_tenant_with_key(session, "db-outage")
        job = Job(tenant_id=tenant.id, kind=JobKind.probe, status=JobStatus.running)
        session.add(job)
        session.flush()
        job_id = job.id
    outage_env.begin()
    errors: list[BaseException] = []

    def write() -> None:
        try:
            state.set_stage(job_id, "after-outage")
            state.finish(job_id, JobStatus.succeeded)
        except BaseException as error:  # noqa: BLE001 - reported by the assertion below
            errors.append(error)

    writer = threading.Thread(target=write)
    writer.start()
    time.sleep(4)  # the writer is retrying meanwhile
    assert writer.is_alive()
    outage_env.end()
    writer.join(timeout=40)
    assert not writer.is_alive() and errors == []
    with session_scope() as session:
        row = session.get(Job, job_id)
        assert row is not None and row.status is JobStatus.succeeded
        stages = [e.message for e in session.query(JobEvent).filter_by(job_id=job_id)]
        assert "after-outage" in stages
