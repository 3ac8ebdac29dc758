"""Keys are hashed and revocable; per-tenant limits answer 429 + Retry-After; CORS is closed
by default; no secret reaches the logs."""

from __future__ import annotations

import logging
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from tests.conftest import clear_cached_settings, new_key
from tests.security.conftest import write_video

ClientFactory = Callable[..., TestClient]


@pytest.fixture
def client_with(embedded_env: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[ClientFactory]:
    """A fresh app under the given FACESPEECH_* settings."""
    opened: list[TestClient] = []

    def make(**settings: str) -> TestClient:
        from facespeech.api.app import create_app

        for name, value in settings.items():
            monkeypatch.setenv(f"FACESPEECH_{name.upper()}", value)
        clear_cached_settings()
        client = TestClient(create_app())
        client.__enter__()
        opened.append(client)
        return client

    yield make
    for client in opened:
        client.__exit__(None, None, None)


def _bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def test_keys_are_stored_hashed_and_revocable(
    client_with: ClientFactory, embedded_env: Path
) -> None:
    from facespeech.db.models import ApiKey
    from facespeech.db.session import session_scope

    client = client_with()
    key = new_key("revocable")
    assert client.get("/v1/jobs", headers=_bearer(key)).status_code == 200
    with session_scope() as session:
        stored = [row.key_hash for row in session.query(ApiKey)]
    assert key not in stored and all(len(h) == 64 for h in stored)
    revoked = subprocess.run(
        [sys.executable, "-m", "facespeech.cli", "revoke-key", key], capture_output=True, text=True
    )
    assert revoked.returncode == 0, revoked.stderr
    assert "revoked 1" in revoked.stdout
    refused = client.get("/v1/jobs", headers=_bearer(key))
    assert refused.status_code == 401 and "revoked" in refused.json()["detail"]
    again = subprocess.run(
        [sys.executable, "-m", "facespeech.cli", "revoke-key", key], capture_output=True, text=True
    )
    assert again.returncode == 1  # nothing left to revoke says so


def test_request_rate_is_limited_per_tenant(client_with: ClientFactory) -> None:
    client = client_with(tenant_rate_per_s="2", tenant_rate_burst="5")
    noisy, quiet = _bearer(new_key("noisy")), _bearer(new_key("quiet"))
    statuses = [client.get("/v1/jobs", headers=noisy).status_code for _ in range(8)]
    assert statuses[:5] == [200] * 5 and 429 in statuses[5:]
    limited = client.get("/v1/jobs", headers=noisy)
    assert limited.status_code == 429
    assert int(limited.headers["retry-after"]) >= 1
    assert limited.headers["content-type"] == "application/problem+json"
    assert client.get("/v1/jobs", headers=quiet).status_code == 200  # others unaffected


def test_active_jobs_and_storage_are_limited_per_tenant(
    client_with: ClientFactory, tmp_path: Path
) -> None:
    video = write_video(tmp_path / "v.mp4")
    size = video.stat().st_size
    client = client_with(
        tenant_max_active_jobs="2",
        tenant_max_storage_bytes=str(2 * size + 10),
        tenant_rate_per_s="0",
    )
    auth = _bearer(new_key("busy"))
    datasets = [
        client.post("/v1/datasets?filename=v.mp4", headers=auth, content=video.read_bytes())
        for _ in range(3)
    ]
    assert [d.status_code for d in datasets] == [201, 201, 429]
    assert "Retry-After" in datasets[2].headers
    assert "limit" in datasets[2].json()["detail"]
    dataset_id = datasets[0].json()["id"]
    runs = [
        client.post("/v1/training-runs", headers=auth, json={"dataset_id": dataset_id})
        for _ in range(3)
    ]
    assert [r.status_code for r in runs] == [202, 202, 429]
    assert int(runs[2].headers["retry-after"]) > 0
    cancel = client.post(f"/v1/jobs/{runs[0].json()['id']}/cancel", headers=auth)
    assert cancel.json()["status"] == "canceled"
    freed = client.post("/v1/training-runs", headers=auth, json={"dataset_id": dataset_id})
    assert freed.status_code == 202  # a finished job frees its slot


def test_cors_is_closed_by_default(client_with: ClientFactory) -> None:
    client = client_with()
    preflight = {"Origin": "https://evil.example", "Access-Control-Request-Method": "GET"}
    response = client.options("/v1/jobs", headers=preflight)
    assert "access-control-allow-origin" not in response.headers
    response = client.get("/healthz", headers={"Origin": "https://evil.example"})
    assert "access-control-allow-origin" not in response.headers


def test_cors_opens_only_to_configured_origins(client_with: ClientFactory) -> None:
    client = client_with(cors_origins='["https://app.example"]')
    ok = client.options(
        "/v1/jobs",
        headers={"Origin": "https://app.example", "Access-Control-Request-Method": "GET"},
    )
    assert ok.headers["access-control-allow-origin"] == "https://app.example"
    evil = client.options(
        "/v1/jobs",
        headers={"Origin": "https://evil.example", "Access-Control-Request-Method": "GET"},
    )
    assert "access-control-allow-origin" not in evil.headers


def test_no_secret_reaches_the_logs(
    client_with: ClientFactory,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    capfd: pytest.CaptureFixture[str],
) -> None:
    caplog.set_level(logging.DEBUG)
    client = client_with(secret_key="super-secret-signing-key-123", s3_secret_key="s3-secret-xyz")
    key = new_key("quiet")
    wrong = "fsk_this-is-a-wrong-key-that-must-not-be-logged"
    auth = _bearer(key)
    video = write_video(tmp_path / "v.mp4")
    dataset = client.post("/v1/datasets?filename=v.mp4", headers=auth, content=video.read_bytes())
    run = client.post("/v1/training-runs", headers=auth, json={"dataset_id": dataset.json()["id"]})
    client.get(f"/v1/jobs/{run.json()['id']}", headers=auth)
    client.get(f"/v1/jobs/{run.json()['id']}/events", headers=auth)
    client.get("/v1/jobs", headers=_bearer(wrong))
    client.post("/v1/training-runs", headers=auth, json={"dataset_id": "nope", "x": key})
    out, err = capfd.readouterr()
    text = caplog.text + out + err
    assert len(caplog.records) > 0  # the flow did log something
    for secret in (key, wrong, "super-secret-signing-key-123", "s3-secret-xyz"):
        assert secret not in text
