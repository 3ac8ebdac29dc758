"""The API over a real embedded stack: SQLite, local store, filesystem broker (no worker)."""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

PROBLEM = "application/problem+json"


def _upload(client: TestClient, auth: dict[str, str], path: Path, **headers: str):  # type: ignore[no-untyped-def]
    with path.open("rb") as handle:
        return client.post(
            "/v1/datasets",
            headers={**auth, **headers},
            files={"file": (path.name, handle, "video/mp4")},
        )


def _queued_run(client: TestClient, auth: dict[str, str], video: Path) -> dict:  # type: ignore[type-arg]
    """A training run on a fresh upload of `video`, queued (no worker runs in these tests)."""
    dataset = _upload(client, auth, video).json()
    return client.post("/v1/training-runs", headers=auth,  # type: ignore[no-any-return]
                       json={"dataset_id": dataset["id"], "preset": "tiny"}).json()


def test_start_up_objects_are_frozen_out_of_the_collector(client: TestClient) -> None:
    # Without it an oldest-generation pass walked the whole start-up heap every few seconds
    # under load: 100-140 ms stalls, p99 190 ms at 200 requests/s (docs/RELIABILITY.md).
    import gc

    assert gc.get_freeze_count() > 10_000


def test_health_and_metrics(client: TestClient) -> None:
    assert client.get("/healthz").json()["status"] == "ok"
    assert client.get("/readyz").json()["checks"] == {"database": "ok", "store": "ok"}
    client.get("/healthz")
    assert "facespeech_http_requests_total" in client.get("/metrics").text


def test_requires_an_api_key(client: TestClient) -> None:
    response = client.get("/v1/jobs")
    assert response.status_code == 401
    assert response.headers["content-type"] == PROBLEM
    assert client.get("/v1/jobs", headers={"Authorization": "Bearer nope"}).status_code == 401


def test_upload_video_multipart_and_raw(
    client: TestClient, auth: dict[str, str], small_video: Path
) -> None:
    created = _upload(client, auth, small_video)
    assert created.status_code == 201, created.text
    body = created.json()
    assert body["source_kind"] == "video" and body["size_bytes"] == small_video.stat().st_size
    raw = client.post(
        "/v1/datasets?filename=raw.mp4", headers=auth, content=small_video.read_bytes()
    )
    assert raw.status_code == 201, raw.text
    assert raw.json()["sha256"] == body["sha256"]
    assert client.get(f"/v1/datasets/{body['id']}", headers=auth).json()["id"] == body["id"]


def test_idempotency_key_returns_the_same_dataset(
    client: TestClient, auth: dict[str, str], small_video: Path
) -> None:
    first = _upload(client, auth, small_video, **{"Idempotency-Key": "abc"}).json()
    again = _upload(client, auth, small_video, **{"Idempotency-Key": "abc"}).json()
    assert first["id"] == again["id"]


@pytest.mark.parametrize(
    ("payload", "status"),
    [
        (b"", 422),
        (b"this is not a video at all" * 100, 422),
        (b"\x00\x00\x00\x20ftypisom" + b"\x00" * 2000, 422),  # an mp4 header, then nothing
    ],
    ids=["empty", "not-media", "truncated-mp4"],
)
def test_bad_uploads_get_a_problem(
    client: TestClient, auth: dict[str, str], payload: bytes, status: int
) -> None:
    response = client.post(
        "/v1/datasets", headers=auth, files={"file": ("clip.mp4", io.BytesIO(payload), "video/mp4")}
    )
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == PROBLEM
    assert response.json()["detail"]


def test_corrupt_tail_of_a_real_video_is_rejected(
    client: TestClient, auth: dict[str, str], small_video: Path, tmp_path: Path
) -> None:
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(small_video.read_bytes()[: small_video.stat().st_size // 3])
    assert _upload(client, auth, cut).status_code == 422


def test_upload_limit_is_enforced_while_streaming(
    client: TestClient, auth: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from facespeech.config import get_settings

    monkeypatch.setattr(get_settings(), "max_upload_bytes", 1000)
    response = client.post(
        "/v1/datasets?filename=big.mp4", headers=auth, content=iter([b"x" * 600, b"x" * 600])
    )
    assert response.status_code == 413
    uploads = get_settings().work_dir / "uploads"
    assert not any(uploads.iterdir()), "a refused upload must leave no temp file"


def test_archive_upload_is_accepted_as_archive(client: TestClient, auth: dict[str, str]) -> None:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("metadata/info.json", "{}")
    response = client.post("/v1/datasets?filename=set.zip", headers=auth, content=buffer.getvalue())
    assert response.status_code == 201
    assert response.json()["source_kind"] == "archive"


def test_training_run_validation(
    client: TestClient, auth: dict[str, str], small_video: Path
) -> None:
    dataset = _upload(client, auth, small_video).json()
    unknown_field = client.post(
        "/v1/training-runs",
        headers=auth,
        json={"dataset_id": dataset["id"], "preset": "tiny", "x": 1},
    )
    assert unknown_field.status_code == 422
    bad_override = client.post(
        "/v1/training-runs",
        headers=auth,
        json={"dataset_id": dataset["id"], "preset": "tiny", "overrides": {"no_such_field": 1}},
    )
    assert bad_override.status_code == 422
    for field, value in {"audio_neighbours": 100_000, "motion_warp": 5.0}.items():
        # an audio context of 100,000 frames would exhaust a worker's memory, not fail fast
        out_of_range = client.post(
            "/v1/training-runs", headers=auth,
            json={"dataset_id": dataset["id"], "preset": "tiny", "overrides": {field: value}},
        )
        assert out_of_range.status_code == 422, field
        assert out_of_range.headers["content-type"].startswith("application/problem+json")
    nan = client.post(
        "/v1/training-runs",
        headers={**auth, "content-type": "application/json"},
        content=b'{"dataset_id": "%s", "overrides": {"steps": NaN}}' % dataset["id"].encode(),
    )
    assert nan.status_code == 422
    missing = client.post(
        "/v1/training-runs", headers=auth, json={"dataset_id": "0" * 32, "preset": "tiny"}
    )
    assert missing.status_code == 404


def test_training_run_is_queued_and_cancelable(
    client: TestClient, auth: dict[str, str], small_video: Path
) -> None:
    dataset = _upload(client, auth, small_video).json()
    job = client.post(
        "/v1/training-runs", headers=auth, json={"dataset_id": dataset["id"], "preset": "tiny"}
    ).json()
    assert job["status"] == "queued" and job["kind"] == "train" and job["model_id"]
    listed = client.get("/v1/jobs?kind=train", headers=auth).json()
    assert listed["count"] == 1 and listed["data"][0]["id"] == job["id"]
    assert client.get("/v1/jobs?status=running", headers=auth).json()["count"] == 0
    canceled = client.post(f"/v1/jobs/{job['id']}/cancel", headers=auth).json()
    assert canceled["status"] == "canceled"
    events = client.get(f"/v1/jobs/{job['id']}/events", headers=auth).json()["data"]
    assert [e["message"] for e in events][-1].startswith("cancel")
    model = client.get(f"/v1/models/{job['model_id']}", headers=auth).json()
    assert model["status"] == "failed"  # a canceled run yields no model


def test_tenants_see_only_their_own_objects(
    client: TestClient, auth: dict[str, str], other_auth: dict[str, str], small_video: Path
) -> None:
    dataset = _upload(client, auth, small_video).json()
    job = client.post(
        "/v1/training-runs", headers=auth, json={"dataset_id": dataset["id"], "preset": "tiny"}
    ).json()
    for path in (
        f"/v1/datasets/{dataset['id']}",
        f"/v1/jobs/{job['id']}",
        f"/v1/jobs/{job['id']}/events",
        f"/v1/models/{job['model_id']}",
    ):
        assert client.get(path, headers=other_auth).status_code == 404, path
    assert client.post(f"/v1/jobs/{job['id']}/cancel", headers=other_auth).status_code == 404
    assert client.get("/v1/jobs", headers=other_auth).json()["count"] == 0
    stolen = client.post(
        "/v1/training-runs",
        headers=other_auth,
        json={"dataset_id": dataset["id"], "preset": "tiny"},
    )
    assert stolen.status_code == 404


def test_render_of_unknown_or_unready_model(
    client: TestClient, auth: dict[str, str], small_video: Path
) -> None:
    audio = small_video.read_bytes()
    unknown = client.post(
        "/v1/renders",
        headers=auth,
        data={"model_id": "f" * 32},
        files={"audio": ("a.wav", io.BytesIO(audio), "audio/wav")},
    )
    assert unknown.status_code == 404
    dataset = _upload(client, auth, small_video).json()
    job = client.post(
        "/v1/training-runs", headers=auth, json={"dataset_id": dataset["id"], "preset": "tiny"}
    ).json()
    training = client.post(
        "/v1/renders",
        headers=auth,
        data={"model_id": job["model_id"]},
        files={"audio": ("a.wav", io.BytesIO(audio), "audio/wav")},
    )
    assert training.status_code == 409
    assert "training" in training.json()["detail"]


def test_datasets_are_listed_newest_first_and_per_tenant(
    client: TestClient, auth: dict[str, str], other_auth: dict[str, str], small_video: Path
) -> None:
    first = _upload(client, auth, small_video).json()
    second = _upload(client, auth, small_video).json()
    listed = client.get("/v1/datasets", headers=auth).json()
    assert listed["count"] == 2
    assert [d["id"] for d in listed["data"]] == [second["id"], first["id"]]
    page = client.get("/v1/datasets?limit=1&offset=1", headers=auth).json()
    assert [d["id"] for d in page["data"]] == [first["id"]] and page["count"] == 2
    assert client.get("/v1/datasets?status=failed", headers=auth).json()["count"] == 0
    assert client.get("/v1/datasets", headers=other_auth).json() == {"data": [], "count": 0}
    assert client.get("/v1/datasets?status=bogus", headers=auth).status_code == 422


def test_models_are_listed_per_tenant_and_by_status(
    client: TestClient, auth: dict[str, str], other_auth: dict[str, str], small_video: Path
) -> None:
    run = _queued_run(client, auth, small_video)
    listed = client.get("/v1/models", headers=auth).json()
    assert listed["count"] == 1 and listed["data"][0]["id"] == run["model_id"]
    assert listed["data"][0]["status"] == "training"
    assert client.get("/v1/models?status=ready", headers=auth).json()["count"] == 0
    assert client.get("/v1/models", headers=other_auth).json() == {"data": [], "count": 0}


def test_usage_counts_stored_bytes_and_active_jobs_per_tenant(
    client: TestClient, auth: dict[str, str], other_auth: dict[str, str], small_video: Path
) -> None:
    empty = client.get("/v1/usage", headers=auth).json()
    assert empty["stored_bytes"] == 0 and empty["active_jobs"] == 0
    assert empty["max_storage_bytes"] > 0 and empty["max_active_jobs"] > 0
    dataset = _upload(client, auth, small_video).json()
    client.post("/v1/training-runs", headers=auth,
                json={"dataset_id": dataset["id"], "preset": "tiny"})
    usage = client.get("/v1/usage", headers=auth).json()
    assert usage["stored_bytes"] == dataset["size_bytes"] == small_video.stat().st_size
    assert usage["active_jobs"] == 1
    other = client.get("/v1/usage", headers=other_auth).json()
    assert other["stored_bytes"] == 0 and other["active_jobs"] == 0
