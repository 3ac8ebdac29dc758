"""The tiny preset on the real shared clip: must beat a static reference frame (slow, CPU)."""

from __future__ import annotations

from pathlib import Path

import pytest

from facespeech.train import TrainConfig, run
from tests.conftest import shared_file


@pytest.mark.slow
def test_tiny_beats_the_static_frame_on_real_video(tmp_path: Path) -> None:
    from facespeech.preprocess.config import PreprocessConfig
    from facespeech.preprocess.pipeline import run as preprocess

    video = shared_file("video/hdtf_aoc_8s.mp4")
    preprocess(video, tmp_path / "data", PreprocessConfig(image_size=128))
    result = run(tmp_path / "data", tmp_path / "run", TrainConfig.from_preset("tiny"))

    assert result.metrics["psnr"] > result.metrics["baseline_static_psnr"]
    assert result.metrics["psnr_face"] > result.metrics["baseline_static_psnr_face"]
