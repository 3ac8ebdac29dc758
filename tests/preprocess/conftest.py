"""Datasets made once per session from real clips, at small settings to keep tests quick."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import cv2
import numpy as np
import pytest

from facespeech.hooks import Progress
from facespeech.media import VideoWriter, iter_video_frames, load_audio
from facespeech.preprocess import PreprocessConfig, PreprocessReport, run
from tests.conftest import shared_file

# Short clips (5 s) stand in for real uploads in the failure tests: lower the length limit.
SMALL = PreprocessConfig(image_size=128, min_seconds=4.0)
TAKES = replace(SMALL, min_seconds=3.0)  # for two 4 s takes of one person


@pytest.fixture(scope="session")
def aoc_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, PreprocessReport, list]:
    video = shared_file("video/hdtf_aoc_8s.mp4")
    out = tmp_path_factory.mktemp("aoc")
    progress: list[Progress] = []
    report = run(video, out, SMALL, on_progress=progress.append)
    return out, report, progress


@pytest.fixture(scope="session")
def obama_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, PreprocessReport]:
    video = shared_file("video/obama_weekly_address_34s.mp4")
    out = tmp_path_factory.mktemp("obama")
    return out, run(video, out, SMALL)


def write_video(
    path: Path, frames: list[np.ndarray], audio: np.ndarray | None, fps: int = 25
) -> Path:
    height, width = frames[0].shape[:2]
    with VideoWriter(path, fps, width, height, audio=audio) as writer:
        for frame in frames:
            writer.write(frame)
    return path


def aoc_frames_and_audio(seconds: float) -> tuple[list[np.ndarray], np.ndarray]:
    """The first `seconds` of the real 512x512 clip, downscaled to 256 to keep tests fast."""
    video = shared_file("video/hdtf_aoc_8s.mp4")
    frames = []
    for frame in iter_video_frames(video, max_side=256):
        frames.append(frame)
        if len(frames) >= round(seconds * 25):
            break
    return frames, load_audio(video)[: round(seconds * 16_000)]


@pytest.fixture(scope="session")
def two_takes(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A quiet 4:3 take and a loud square one of the same person, 4 s each."""
    folder = tmp_path_factory.mktemp("takes")
    frames, audio = aoc_frames_and_audio(8.0)
    wide = [cv2.resize(f, (320, 240)) for f in frames[:100]]
    quiet = write_video(folder / "quiet_wide.mp4", wide, audio[: 100 * 640] * 0.1)
    loud = write_video(folder / "loud_square.mp4", frames[100:200], audio[100 * 640 :])
    return quiet, loud
