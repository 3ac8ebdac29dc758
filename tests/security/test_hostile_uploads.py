"""Hostile and broken uploads, generated here, against the real API (embedded stack): each
gets a clear 4xx with a reason, and nothing is written outside the tenant's prefix."""

from __future__ import annotations

import json
import time
import wave
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from tests.security.conftest import MAX_UPLOAD, write_video

PROBLEM = "application/problem+json"


def _post_file(
    client: TestClient,
    auth: dict[str, str],
    path: Path,
    name: str | None = None,
    content_type: str = "video/mp4",
):  # type: ignore[no-untyped-def]
    with path.open("rb") as handle:
        return client.post(
            "/v1/datasets", headers=auth, files={"file": (name or path.name, handle, content_type)}
        )


def _assert_clean(data_dir: Path) -> None:
    """No half-written upload left, and every stored object under some tenant's datasets."""
    uploads = data_dir / "work" / "uploads"
    assert not uploads.exists() or list(uploads.iterdir()) == []
    store = data_dir / "objects" / "data"
    for path in store.rglob("*") if store.exists() else []:
        if path.is_file():
            parts = path.relative_to(store).parts
            assert parts[0] == "tenants" and parts[2] in ("datasets", "jobs"), parts
    assert not list((data_dir / "objects" / "tmp").iterdir())


def _truncated(path: Path) -> Path:
    out = path.with_name("truncated.mp4")
    data = path.read_bytes()
    out.write_bytes(data[: len(data) // 2])
    return out


@pytest.mark.parametrize(
    ("make", "reason"),
    [
        (lambda d: _write(d / "empty.mp4", b""), "no bytes"),
        (lambda d: _write(d / "lies.mp4", b"<html>not a video</html>" * 400), ""),
        (lambda d: _truncated(write_video(d / "full.mp4", frames=100)), "truncated.mp4"),
        (lambda d: write_video(d / "silent.mp4", audio=False), "no audio track"),
        (lambda d: write_video(d / "audio-only.mp4", video=False), "no video stream"),
        (lambda d: write_video(d / "tiny.mkv", width=1, height=1, codec="ffv1"), "1x1"),
        (lambda d: write_video(d / "8k.mkv", 7680, 4320, frames=2, codec="ffv1"), "7680x4320"),
        (lambda d: write_video(d / "fast.mp4", fps=1000, frames=50), "1000 fps"),
    ],
    ids=["0-byte", "lying-type", "truncated", "no-audio", "audio-only", "1x1", "8k", "1000fps"],
)
def test_bad_videos_are_refused_with_a_reason(
    client: TestClient,
    auth: dict[str, str],
    embedded_env: Path,
    tmp_path: Path,
    make,
    reason: str,  # type: ignore[no-untyped-def]
) -> None:
    response = _post_file(client, auth, make(tmp_path))
    assert response.status_code == 422, response.text
    assert response.headers["content-type"] == PROBLEM
    assert reason in response.json()["detail"]
    assert str(embedded_env) not in response.text, "the error reveals a server path"
    _assert_clean(embedded_env)


def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def test_over_limit_upload_is_cut_off_while_streaming(
    client: TestClient, auth: dict[str, str], embedded_env: Path
) -> None:
    sent = 0

    def body() -> Iterator[bytes]:  # chunked: no Content-Length to refuse it up front
        nonlocal sent
        chunk = b"\0" * (1024 * 1024)
        for _ in range(MAX_UPLOAD // len(chunk) + 50):
            sent += len(chunk)
            yield chunk

    response = client.post("/v1/datasets?filename=huge.mp4", headers=auth, content=body())
    assert response.status_code == 413, response.text
    assert str(MAX_UPLOAD) in response.json()["detail"]
    declared = client.post(
        "/v1/datasets?filename=huge.mp4",
        headers={**auth, "Content-Length": str(10 * MAX_UPLOAD)},
        content=b"\0" * 10,
    )
    assert declared.status_code == 413
    _assert_clean(embedded_env)


@pytest.mark.parametrize(
    "filename",
    [
        "../../../../etc/passwd.mp4",
        "/abs/olute.mp4",
        "..\\..\\win.mp4",
        "видео 😀.mp4",
        "a\r\nX-Injected: yes.mp4",
        'name";evil=1.mp4',
        "x" * 400 + ".mp4",
        "...",
        "\0.mp4",
    ],
)
def test_hostile_filenames_stay_inside_the_prefix(
    client: TestClient, auth: dict[str, str], embedded_env: Path, tmp_path: Path, filename: str
) -> None:
    video = write_video(tmp_path / "ok.mp4")
    response = client.post(
        "/v1/datasets", headers=auth, params={"filename": filename}, content=video.read_bytes()
    )
    assert response.status_code == 201, response.text
    dataset = response.json()
    assert "\r" not in dataset["name"] or dataset["name"] == filename[:255]
    _assert_clean(embedded_env)
    from facespeech.db.models import Dataset
    from facespeech.db.session import session_scope

    with session_scope() as session:
        row = session.get(Dataset, dataset["id"])
        assert row is not None
        prefix = f"tenants/{row.tenant_id}/datasets/{row.id}/source/"
        assert row.source_key.startswith(prefix)
        leaf = row.source_key.removeprefix(prefix)
        assert "/" not in leaf and ".." not in leaf and "\r" not in leaf and len(leaf) <= 100


def test_a_video_with_a_lying_extension_and_type_is_judged_by_its_bytes(
    client: TestClient, auth: dict[str, str], tmp_path: Path
) -> None:
    video = write_video(tmp_path / "clip.mp4")
    response = _post_file(client, auth, video, name="photo.png", content_type="image/png")
    assert response.status_code == 201, response.text
    assert response.json()["source_kind"] == "video"


@pytest.mark.parametrize(
    "body",
    [
        '{"dataset_id": "%s", "overrides": {"steps": NaN}}',
        '{"dataset_id": "%s", "overrides": {"steps": Infinity}}',
        '{"dataset_id": "%s", "overrides": {"steps": 1e400}}',
        '{"dataset_id": "%s", "overrides": {"steps": 100000000000000000000000000000}}',
        '{"dataset_id": "%s", "overrides": {"lr": -1}}',
        '{"dataset_id": "%s", "overrides": {"no_such_setting": 1}}',
        '{"dataset_id": "%s", "preset": "tiny", "admin": true}',
        '{"dataset_id": "%s", "preset": "../../etc"}',
        '{"dataset_id": "../../etc/passwd"}',
        "[1, 2, 3]",
        '{"dataset_id": "%s"',
    ],
)
def test_hostile_json_is_422(
    client: TestClient, auth: dict[str, str], tmp_path: Path, body: str
) -> None:
    dataset = _post_file(client, auth, write_video(tmp_path / "ok.mp4")).json()
    payload = body % dataset["id"] if "%s" in body else body
    response = client.post(
        "/v1/training-runs", headers={**auth, "Content-Type": "application/json"}, content=payload
    )
    assert response.status_code == 422, response.text
    assert response.headers["content-type"] == PROBLEM
    json.dumps(response.json(), allow_nan=False)  # the error itself is valid JSON


def _ready_model(auth: dict[str, str]) -> str:
    """A model row marked ready: rendering is refused before any model file is read."""
    from facespeech.api.security import tenant_for_key
    from facespeech.db.models import Dataset, Job, JobKind, JobStatus, ModelStatus, TrainedModel
    from facespeech.db.session import session_scope

    with session_scope() as session:
        tenant = tenant_for_key(session, auth["Authorization"].removeprefix("Bearer "))
        assert tenant is not None
        dataset = Dataset(tenant_id=tenant.id, name="d", source_kind="video", source_key="k")
        session.add(dataset)
        session.flush()
        job = Job(
            tenant_id=tenant.id,
            kind=JobKind.train,
            status=JobStatus.succeeded,
            dataset_id=dataset.id,
        )
        session.add(job)
        session.flush()
        model = TrainedModel(
            tenant_id=tenant.id,
            dataset_id=dataset.id,
            job_id=job.id,
            preset="tiny",
            status=ModelStatus.ready,
            checkpoint_key="k",
        )
        session.add(model)
        session.flush()
        return model.id


def test_hour_long_audio_is_refused_from_its_header(
    client: TestClient, auth: dict[str, str], embedded_env: Path, tmp_path: Path
) -> None:
    audio = tmp_path / "hour.wav"
    with wave.open(str(audio), "wb") as out:  # one hour of 8 kHz silence, 57.6 MB
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(8000)
        second = b"\0\0" * 8000
        for _ in range(3600):
            out.writeframesraw(second)
    model_id = _ready_model(auth)
    started = time.monotonic()
    with audio.open("rb") as handle:
        response = client.post(
            "/v1/renders",
            headers=auth,
            data={"model_id": model_id},
            files={"audio": ("hour.wav", handle, "audio/wav")},
        )
    assert response.status_code == 413, response.text
    assert "3600 s" in response.json()["detail"]
    assert time.monotonic() - started < 30
    _assert_clean(embedded_env)


def test_render_rejects_a_video_without_audio_and_a_non_media_file(
    client: TestClient, auth: dict[str, str], tmp_path: Path
) -> None:
    model_id = _ready_model(auth)
    for path in (
        write_video(tmp_path / "silent.mp4", audio=False),
        _write(tmp_path / "x.wav", b"RIFF....WAVEfmt garbage" * 50),
    ):
        with path.open("rb") as handle:
            response = client.post(
                "/v1/renders",
                headers=auth,
                data={"model_id": model_id},
                files={"audio": (path.name, handle, "audio/wav")},
            )
        assert response.status_code == 422, response.text
