"""Fixtures of the API tests."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from facespeech.media import VideoWriter


@pytest.fixture
def small_video(tmp_path: Path) -> Path:
    path = tmp_path / "clip.mp4"
    rng = np.random.default_rng(0)
    audio = (0.1 * rng.standard_normal(16_000)).astype(np.float32)
    with VideoWriter(path, fps=25, width=64, height=64, audio=audio) as writer:
        for _ in range(25):
            writer.write(rng.integers(0, 255, (64, 64, 3), dtype=np.uint8))
    return path
