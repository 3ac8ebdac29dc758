"""Upload -> preprocess -> train -> render -> a playable mp4, over HTTP, with a real worker."""

from __future__ import annotations

import json
import math
import tarfile
from pathlib import Path

import av
import numpy as np
import pytest

from facespeech.client import ApiError, Client
from facespeech.media import VideoWriter, load_audio
from facespeech.sample import make_sample, make_speech
from tests.conftest import shared_file
from tests.e2e.conftest import Stack

pytestmark = pytest.mark.slow
FAST_TRAINING = {"steps": 60}  # enough to prove the path; `make demo` runs the full preset


def _check_playable(video: Path, audio: Path) -> None:
    duration = len(load_audio(audio)) / 16_000
    with av.open(str(video)) as container:
        v, a = container.streams.video[0], container.streams.audio[0]
        assert v.codec_context.name == "h264" and a.codec_context.name == "aac"
        frames = sum(1 for _ in container.decode(video=0))
        assert abs(float(container.duration / 1e6) - duration) <= 1.5 / 25
    assert frames == math.ceil(duration * 25)


def _train(client: Client, video: Path, overrides: dict[str, int]) -> dict:  # type: ignore[type-arg]
    dataset = client.upload_dataset(video)
    job = client.wait(client.start_training(dataset["id"], "tiny", overrides)["id"], timeout=1800)
    assert job["status"] == "succeeded", job["error"]
    model = client.model(job["model_id"])
    assert model["status"] == "ready"
    assert model["metrics"]["psnr"] > 10
    return model


def _render(client: Client, model: dict, audio: Path, out: Path) -> str:  # type: ignore[type-arg]
    job_id = client.start_render(model["id"], audio)["id"]
    # followed live through the real server as Server-Sent Events, to the end
    timeline = list(client.follow(job_id, timeout=900))
    assert timeline[-1] == {"kind": "end", "status": "succeeded"}
    assert any(e.get("kind") == "stage" and "render" in e["message"] for e in timeline)
    job = client.job(job_id)
    assert job["status"] == "succeeded", job["error"]
    assert job["metrics"]["frames"] > 0
    _check_playable(client.download(job["result_url"], out), audio)
    return job_id


def test_generated_sample_end_to_end(embedded_stack: Stack, tmp_path: Path) -> None:
    client = Client(embedded_stack.base_url, embedded_stack.api_key)
    video, _ = make_sample(tmp_path / "sample", seconds=10.0)
    model = _train(client, video, FAST_TRAINING)
    dataset = client.http.get(f"/v1/datasets/{model['dataset_id']}").json()
    sheet = client.download(dataset["contact_sheet_url"], tmp_path / "sheet.png")
    assert sheet.read_bytes().startswith(b"\x89PNG")
    speech = make_speech(tmp_path / "speech.wav", seconds=3.0, seed=3)
    rendered = _render(client, model, speech, tmp_path / "out.mp4")

    transparent = client.wait(client.start_render(model["id"], speech,
                                                  {"background": "transparent"})["id"],
                              timeout=900)
    assert transparent["status"] == "succeeded", transparent["error"]
    webm = client.download(transparent["result_url"], tmp_path / "out.webm")
    with av.open(str(webm)) as container:
        assert container.format.name.startswith("matroska,webm")
        video = container.streams.video[0]
        assert video.codec_context.name == "vp9" and video.metadata.get("alpha_mode") == "1"
        assert container.streams.audio[0].codec_context.name == "opus"

    # deleting the dataset erases everything the workers made from it
    used = client.usage()["stored_bytes"]
    client.delete_dataset(model["dataset_id"])
    assert client.usage()["stored_bytes"] < used
    assert client.job(transparent["id"])["result_url"] is None
    made = {model["dataset_id"], model["id"], model["job_id"], rendered, transparent["id"]}
    store = Path(embedded_stack.env["FACESPEECH_DATA_DIR"])
    leftovers = [p for p in store.rglob("*") if p.is_file() and "tenants" in p.parts
                 and made & set(p.parts)]
    assert not leftovers, leftovers


def test_real_clip_end_to_end(embedded_stack: Stack, tmp_path: Path) -> None:
    client = Client(embedded_stack.base_url, embedded_stack.api_key)
    model = _train(client, shared_file("video/hdtf_aoc_8s.mp4"), FAST_TRAINING)
    # the worker fitted the operator's Basel Face Model (FACESPEECH_BFM_MODEL) into the dataset
    store = Path(embedded_stack.env["FACESPEECH_DATA_DIR"])
    (processed,) = [p for p in store.rglob("processed.tar") if model["dataset_id"] in p.parts]
    with tarfile.open(processed) as archive:
        names = archive.getnames()
        expressions = json.load(archive.extractfile(  # type: ignore[arg-type]
            next(n for n in names if n.endswith("metadata/expressions.json"))))
    assert any(n.endswith("metadata/bfm/p0.npz") for n in names)
    assert all(len(e["bfm"]) == 6 for e in expressions["p0"])
    _render(client, model, shared_file("audio/en_radio31.wav"), tmp_path / "out.mp4")


def test_bad_inputs_fail_cleanly_and_the_worker_lives(
    embedded_stack: Stack, tmp_path: Path
) -> None:
    client = Client(embedded_stack.base_url, embedded_stack.api_key)
    faceless = tmp_path / "gradient.mp4"
    rng = np.random.default_rng(1)
    speechy = (0.2 * np.sin(np.linspace(0, 2000, 16_000 * 6))).astype(np.float32)
    with VideoWriter(faceless, fps=25, width=128, height=128, audio=speechy) as writer:
        for i in range(150):
            frame = np.full((128, 128, 3), i, np.uint8)
            writer.write(frame + rng.integers(0, 8, frame.shape, dtype=np.uint8))
    dataset = client.upload_dataset(faceless)
    job = client.wait(client.start_training(dataset["id"], "tiny", FAST_TRAINING)["id"])
    assert job["status"] == "failed"
    assert "face" in job["error"].lower()
    assert client.model(job["model_id"])["status"] == "failed"
    with pytest.raises(ApiError) as unknown:
        client.start_render("0" * 32, shared_file("audio/en_radio31.wav"))
    assert unknown.value.status == 404
    assert embedded_stack.alive()


def test_full_stack_protocols_end_to_end(full_stack: Stack, tmp_path: Path) -> None:
    """PostgreSQL, Redis and an S3 server instead of the embedded parts; same code."""
    client = Client(full_stack.base_url, full_stack.api_key)
    video, _ = make_sample(tmp_path / "sample", seconds=8.0)
    model = _train(client, video, {"steps": 20})
    speech = make_speech(tmp_path / "speech.wav", seconds=2.0, seed=5)
    _render(client, model, speech, tmp_path / "out.mp4")
