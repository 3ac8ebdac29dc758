"""An in-process API on a fresh embedded stack with small limits, and hostile media makers."""

from __future__ import annotations

from collections.abc import Iterator
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest
from fastapi.testclient import TestClient

from tests.conftest import clear_cached_settings

MAX_UPLOAD = 80 * 1024 * 1024  # above an hour of 8 kHz audio, so its duration is what fails


@pytest.fixture
def client(embedded_env: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[TestClient]:
    from facespeech.api.app import create_app

    monkeypatch.setenv("FACESPEECH_MAX_UPLOAD_BYTES", str(MAX_UPLOAD))
    monkeypatch.setenv("FACESPEECH_TENANT_RATE_PER_S", "0")
    clear_cached_settings()
    with TestClient(create_app()) as test_client:
        yield test_client


def write_video(
    path: Path,
    width: int = 64,
    height: int = 64,
    fps: int = 25,
    frames: int = 25,
    audio: bool = True,
    video: bool = True,
    codec: str = "libx264",
) -> Path:
    """A real media file of any shape: ffv1 (in .mkv) allows 1x1, libx264 needs even sides."""
    rng = np.random.default_rng(0)
    with av.open(str(path), "w") as container:
        vstream = None
        if video:
            vstream = container.add_stream(codec, rate=fps)
            vstream.width, vstream.height = width, height
            vstream.pix_fmt = "yuv444p" if codec == "ffv1" else "yuv420p"
            vstream.time_base = Fraction(1, fps)
        astream = container.add_stream("aac", rate=16_000) if audio else None
        if vstream is not None:
            for index in range(frames):
                pixels = np.full((height, width, 3), 40 + index % 200, dtype=np.uint8)
                frame = av.VideoFrame.from_ndarray(pixels, format="rgb24")
                frame.pts = index
                container.mux(vstream.encode(frame))
            container.mux(vstream.encode())
        if astream is not None:
            seconds = max(frames / fps, 1.0)
            samples = (0.1 * rng.standard_normal((1, int(16_000 * seconds)))).astype(np.float32)
            aframe = av.AudioFrame.from_ndarray(samples, format="fltp", layout="mono")
            aframe.sample_rate = 16_000
            container.mux(astream.encode(aframe))
            container.mux(astream.encode())
    return path


@pytest.fixture(scope="session")
def moto_endpoint_url() -> Iterator[str]:
    from moto.server import ThreadedMotoServer

    from tests.conftest import free_port

    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    yield f"127.0.0.1:{port}"
    server.stop()
