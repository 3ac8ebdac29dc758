"""POST /v1/renders: render options and bad audio are refused with a clear problem."""

from __future__ import annotations

import io
import json
import struct

import numpy as np
import pytest
import soundfile
from fastapi.testclient import TestClient

from facespeech.train.synthetic import synthetic_voice

SAMPLE_RATE = 16_000


def _model(tenant_key: str, status: str) -> str:
    """A model row in `status` for the tenant of the API key (no file: nothing renders here)."""
    from facespeech.api.security import tenant_for_key
    from facespeech.db.models import (
        Dataset,
        DatasetStatus,
        Job,
        JobKind,
        ModelStatus,
        TrainedModel,
    )
    from facespeech.db.session import session_scope

    with session_scope() as session:
        tenant = tenant_for_key(session, tenant_key)
        assert tenant is not None
        dataset = Dataset(tenant_id=tenant.id, name="d", status=DatasetStatus.ready,
                          source_kind="video", source_key="k")
        session.add(dataset)
        session.flush()
        job = Job(tenant_id=tenant.id, kind=JobKind.train, dataset_id=dataset.id)
        session.add(job)
        session.flush()
        model = TrainedModel(tenant_id=tenant.id, dataset_id=dataset.id, job_id=job.id,
                             status=ModelStatus(status), preset="tiny", checkpoint_key="m.pt")
        session.add(model)
        session.flush()
        return model.id


def _wav(wave: np.ndarray, rate: int = SAMPLE_RATE) -> bytes:
    buffer = io.BytesIO()
    soundfile.write(buffer, wave, rate, format="WAV", subtype="PCM_16")
    return buffer.getvalue()


def _two_hour_flac() -> bytes:
    """One real second of FLAC whose STREAMINFO says two hours: the header is all we read."""
    rate = 8000
    buffer = io.BytesIO()
    soundfile.write(buffer, 0.3 * np.sin(np.arange(rate) * 0.05), rate, format="FLAC")
    flac = bytearray(buffer.getvalue())
    assert flac[:4] == b"fLaC"
    # STREAMINFO bytes 18..25: sample rate (20 bits), channels, bits, total samples (36 bits)
    (packed,) = struct.unpack(">Q", flac[18:26])
    packed = packed & ~((1 << 36) - 1) | 2 * 3600 * rate
    flac[18:26] = struct.pack(">Q", packed)
    return bytes(flac)


def _post(client: TestClient, auth: dict[str, str], model_id: str, audio: bytes,
          options: object = None, name: str = "speech.wav"):  # type: ignore[no-untyped-def]
    data = {"model_id": model_id}
    if options is not None:
        data["options"] = options if isinstance(options, str) else json.dumps(options)
    return client.post("/v1/renders", headers=auth, data=data,
                       files={"audio": (name, io.BytesIO(audio), "audio/wav")})


@pytest.fixture
def ready_model(auth: dict[str, str]) -> str:
    return _model(auth["Authorization"].removeprefix("Bearer "), "ready")


def test_options_are_validated_and_kept(client: TestClient, auth: dict[str, str],
                                        ready_model: str) -> None:
    speech = _wav(synthetic_voice(1.5, seed=1))
    options = {"size": 768, "fps": 30, "background": "green", "motion": "still",
               "blink_rate": 12}
    accepted = _post(client, auth, ready_model, speech, options)
    assert accepted.status_code == 202, accepted.text
    assert accepted.json()["params"]["options"] == options
    transparent = _post(client, auth, ready_model, speech, {"background": "transparent"})
    assert transparent.status_code == 202, transparent.text
    for bad in ({"size": 100}, {"size": 2048}, {"fps": 0}, {"background": "blue"},
                {"motion": "random"}, {"blink_rate": -1}, {"colour": "red"}, "{not json"):
        refused = _post(client, auth, ready_model, speech, bad)
        assert refused.status_code == 422, bad
        assert refused.json()["title"] == "Invalid Render Options"


@pytest.mark.parametrize(("name", "audio"), [
    ("clipped", lambda: _wav(np.clip(synthetic_voice(1.5, seed=2) * 20, -1, 1))),
    ("8 kHz", lambda: _wav(synthetic_voice(1.5, seed=3)[::2], 8000)),
    ("48 kHz stereo", lambda: _wav(np.repeat(np.repeat(synthetic_voice(1.5, seed=4), 3)[:, None],
                                             2, axis=1), 48_000)),
])
def test_unusual_but_valid_audio_is_accepted(client: TestClient, auth: dict[str, str],
                                             ready_model: str, name: str, audio) -> None:  # type: ignore[no-untyped-def]
    response = _post(client, auth, ready_model, audio())
    assert response.status_code == 202, (name, response.text)


def test_bad_audio_gets_a_clear_problem(client: TestClient, auth: dict[str, str],
                                        ready_model: str) -> None:
    short = _post(client, auth, ready_model, _wav(synthetic_voice(0.2, seed=5)))
    assert short.status_code == 422 and "at least" in short.json()["detail"]
    # two hours, refused from the header (the body holds one second: nothing was decoded)
    long = _post(client, auth, ready_model, _two_hour_flac(), name="long.flac")
    assert long.status_code == 413 and "limit" in long.json()["detail"]
    text = _post(client, auth, ready_model, b"this is not audio at all\n" * 100, name="a.wav")
    assert text.status_code == 422 and "a.wav" in text.json()["detail"]


@pytest.mark.parametrize("status", ["training", "failed"])
def test_model_not_ready_is_409(client: TestClient, auth: dict[str, str],
                                status: str) -> None:
    model_id = _model(auth["Authorization"].removeprefix("Bearer "), status)
    response = _post(client, auth, model_id, _wav(synthetic_voice(1.5, seed=6)))
    assert response.status_code == 409 and status in response.json()["detail"]
