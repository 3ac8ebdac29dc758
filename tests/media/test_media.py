"""facespeech.media on generated and real media: round trips, resampling, bad files."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from facespeech.errors import InputError
from facespeech.media import VideoWriter, iter_video_frames, load_audio, probe

SHARED_DATA = Path(__file__).resolve().parents[3] / "shared" / "data"
needs_shared_data = pytest.mark.skipif(
    not SHARED_DATA.is_dir(), reason=f"real media not found at {SHARED_DATA}"
)


def _tone(seconds: float, sample_rate: int = 16_000) -> np.ndarray:
    t = np.arange(round(seconds * sample_rate)) / sample_rate
    return (0.3 * np.sin(2 * np.pi * 220 * t)).astype(np.float32)


def _write_clip(path: Path, fps: int, n_frames: int, audio: np.ndarray | None = None) -> None:
    with VideoWriter(path, fps=fps, width=64, height=48, audio=audio) as writer:
        for i in range(n_frames):
            # Brightness encodes the frame number so decoding order can be checked.
            writer.write(np.full((48, 64, 3), (i * 3) % 256, dtype=np.uint8))


def test_round_trip_streams_duration_and_audio(tmp_path: Path) -> None:
    audio_s = 2.3
    n_frames = math.ceil(audio_s * 25)
    path = tmp_path / "clip.mp4"
    _write_clip(path, fps=25, n_frames=n_frames, audio=_tone(audio_s))

    info = probe(path)
    assert info.has_video and info.has_audio
    assert (info.width, info.height, info.fps) == (64, 48, 25.0)
    assert (info.video_codec, info.audio_codec) == ("h264", "aac")
    assert abs(info.duration_s - audio_s) <= 1 / 25 + 0.03

    frames = list(iter_video_frames(path, fps=25))
    assert len(frames) == n_frames
    assert frames[0].shape == (48, 64, 3) and frames[0].dtype == np.uint8
    brightness = [int(f.mean()) for f in frames]
    assert brightness == sorted(brightness)  # in order, none repeated or skipped

    wave = load_audio(path)
    assert wave.dtype == np.float32 and wave.ndim == 1
    assert abs(wave.size / 16_000 - audio_s) < 1 / 25


def test_resampling_30_to_25_fps_keeps_duration(tmp_path: Path) -> None:
    path = tmp_path / "thirty.mp4"
    _write_clip(path, fps=30, n_frames=90)
    frames = list(iter_video_frames(path, fps=25, max_side=32))
    assert len(frames) == 75
    assert max(frames[0].shape[:2]) == 32


def test_video_writer_streams_long_videos_without_holding_frames(tmp_path: Path) -> None:
    path = tmp_path / "long.mp4"
    _write_clip(path, fps=25, n_frames=500)
    assert probe(path).duration_s == pytest.approx(20.0, abs=0.05)


@needs_shared_data
@pytest.mark.parametrize(
    "name", sorted(p.name for p in (SHARED_DATA / "audio").glob("*.wav")) or ["none"]
)
def test_shared_audio_loads_as_16k_mono(name: str) -> None:
    path = SHARED_DATA / "audio" / name
    wave = load_audio(path)
    assert wave.ndim == 1 and wave.dtype == np.float32
    assert abs(wave.size / 16_000 - probe(path).duration_s) < 0.05
    assert 0.01 < np.abs(wave).max() <= 1.0


@needs_shared_data
def test_audio_track_of_a_video_and_max_seconds() -> None:
    video = SHARED_DATA / "video" / "hdtf_aoc_8s.mp4"
    assert abs(load_audio(video).size / 16_000 - 8.0) < 0.1
    with pytest.raises(InputError, match="limit"):
        load_audio(video, max_seconds=3.0)


def test_no_audio_stream_is_input_error(tmp_path: Path) -> None:
    path = tmp_path / "silent.mp4"
    _write_clip(path, fps=25, n_frames=10)
    with pytest.raises(InputError, match="no audio"):
        load_audio(path)


def test_empty_file(tmp_path: Path) -> None:
    path = tmp_path / "empty.mp4"
    path.write_bytes(b"")
    with pytest.raises(InputError, match="empty"):
        probe(path)


def test_not_media(tmp_path: Path) -> None:
    path = tmp_path / "notes.mp4"
    path.write_text("these are meeting notes, not a video\n" * 100)
    for read in (probe, load_audio, lambda p: list(iter_video_frames(p))):
        with pytest.raises(InputError):
            read(path)


def test_truncated_file(tmp_path: Path) -> None:
    path = tmp_path / "clip.mp4"
    _write_clip(path, fps=25, n_frames=50, audio=_tone(2.0))
    data = path.read_bytes()
    truncated = tmp_path / "truncated.mp4"
    # +faststart puts the index first: cutting before the media data leaves nothing to decode.
    truncated.write_bytes(data[: len(data) // 10])
    with pytest.raises(InputError):
        probe(truncated)
    with pytest.raises(InputError):
        list(iter_video_frames(truncated))


def test_corrupt_header(tmp_path: Path) -> None:
    path = tmp_path / "clip.mp4"
    _write_clip(path, fps=25, n_frames=20)
    data = bytearray(path.read_bytes())
    data[:64] = bytes(64)
    corrupt = tmp_path / "corrupt.mp4"
    corrupt.write_bytes(bytes(data))
    with pytest.raises(InputError):
        probe(corrupt)
