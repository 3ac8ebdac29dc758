"""Videos preprocessing must refuse, each with a reason the user can act on."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from facespeech.errors import InputError
from facespeech.preprocess import PreprocessConfig, run
from tests.media.phone_clip import write_phone_clip
from tests.preprocess.conftest import SMALL, aoc_frames_and_audio, write_video


def _speech_like(seconds: float) -> np.ndarray:
    t = np.arange(round(seconds * 16_000)) / 16_000
    envelope = 0.5 + 0.5 * np.sin(2 * np.pi * 3 * t)
    return (0.2 * envelope * np.sin(2 * np.pi * 180 * t)).astype(np.float32)


def test_not_media(tmp_path: Path) -> None:
    path = tmp_path / "talk.mp4"
    path.write_text("not a video")
    with pytest.raises(InputError, match="not a readable"):
        run(path, tmp_path / "out", SMALL)


def test_video_without_a_face(tmp_path: Path) -> None:
    y, x = np.mgrid[0:128, 0:128]
    frames = [
        np.stack([(x + 4 * i) % 256, (y + 2 * i) % 256, np.full_like(x, 128)], -1).astype(np.uint8)
        for i in range(125)
    ]
    video = write_video(tmp_path / "gradient.mp4", frames, _speech_like(5.0))
    with pytest.raises(InputError, match="no face"):
        run(video, tmp_path / "out", SMALL)


def test_silent_audio(tmp_path: Path) -> None:
    frames, audio = aoc_frames_and_audio(5.0)
    video = write_video(tmp_path / "silent.mp4", frames, np.zeros_like(audio))
    with pytest.raises(InputError, match="silent"):
        run(video, tmp_path / "out", SMALL)


def test_no_audio_track(tmp_path: Path) -> None:
    frames, _ = aoc_frames_and_audio(5.0)
    video = write_video(tmp_path / "mute.mp4", frames, None)
    with pytest.raises(InputError, match="no audio track"):
        run(video, tmp_path / "out", SMALL)


def test_too_short(tmp_path: Path) -> None:
    frames, audio = aoc_frames_and_audio(2.0)
    video = write_video(tmp_path / "short.mp4", frames, audio)
    with pytest.raises(InputError, match="too short"):
        run(video, tmp_path / "out", SMALL)


def test_audio_much_longer_than_video(tmp_path: Path) -> None:
    frames, audio = aoc_frames_and_audio(5.0)
    video = write_video(tmp_path / "clip.mp4", frames, audio)
    long_audio = write_video(tmp_path / "long_audio.mp4", frames[:2] * 100, np.tile(audio, 2))
    with pytest.raises(InputError, match="must match"):
        run(video, tmp_path / "out", SMALL, audio=long_audio)


def test_two_faces_of_equal_size(tmp_path: Path) -> None:
    frames, audio = aoc_frames_and_audio(5.0)
    doubled = [np.concatenate([f, f], axis=1) for f in frames]
    video = write_video(tmp_path / "two.mp4", doubled, audio)
    with pytest.raises(InputError, match="two faces"):
        run(video, tmp_path / "out", SMALL)


def test_face_too_small(tmp_path: Path) -> None:
    frames, audio = aoc_frames_and_audio(5.0)
    video = write_video(tmp_path / "small.mp4", frames, audio)
    with pytest.raises(InputError, match="px tall"):
        run(video, tmp_path / "out", replace(SMALL, min_face_px=400))


def test_low_frame_rate(tmp_path: Path) -> None:
    frames, audio = aoc_frames_and_audio(5.0)
    video = write_video(tmp_path / "slow.mp4", frames[::2], audio, fps=12)
    with pytest.raises(InputError, match="fps"):
        run(video, tmp_path / "out", SMALL)


def test_too_short_with_the_default_limit(tmp_path: Path) -> None:
    frames, audio = aoc_frames_and_audio(5.0)
    video = write_video(tmp_path / "five_seconds.mp4", frames, audio)
    with pytest.raises(InputError, match="at least 8 s"):
        run(video, tmp_path / "out", PreprocessConfig(image_size=128))


def test_face_missing_too_long_leaves_too_few_usable_frames(tmp_path: Path) -> None:
    frames, audio = aoc_frames_and_audio(8.0)
    grey = np.full_like(frames[0], 128)
    frames = frames[:50] + [grey] * 100 + frames[150:]
    video = write_video(tmp_path / "covered.mp4", frames, audio)
    with pytest.raises(InputError, match=r"only 4\.0 s of frames show the face"):
        run(video, tmp_path / "out", PreprocessConfig(image_size=128))


def test_brief_occlusion_is_interpolated_and_reported(tmp_path: Path) -> None:
    frames, audio = aoc_frames_and_audio(5.0)
    frames[60:63] = [np.full_like(frames[0], 128)] * 3
    video = write_video(tmp_path / "blink_of_grey.mp4", frames, audio)
    report = run(video, tmp_path / "out", SMALL)
    assert report.interpolated_frames == [61, 62, 63]
    assert report.dropped_frames == [] and report.frames == 125


def test_phone_clip_rotated_and_variable_rate_is_preprocessed(tmp_path: Path) -> None:
    frames, audio = aoc_frames_and_audio(5.0)
    tall = [np.ascontiguousarray(f[:, 32:224]) for f in frames]  # portrait, 192 x 256
    clip = write_phone_clip(tmp_path / "phone.mp4", tall, audio)
    report = run(clip, tmp_path / "out", SMALL)
    assert report.frames >= 115 and not report.dropped_frames
