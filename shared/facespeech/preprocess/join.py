"""Several videos of one person joined into one, so preprocessing sees a single clip.

More video of the same person is what lifts the model's quality on new frames most (about
0.8 dB per doubling, docs/QUALITY.md session 6), and people seldom have one long take: a
dataset can be built from several. The videos are joined in time at the dataset's frame
rate; each is letterboxed into the frame size of the last one (the main video, whose tail is
held out), and each one's speech is brought to the same loudness before the join, so a quiet
recording does not teach the model that quiet speech moves the lips less.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import soundfile as sf

from facespeech import dataset
from facespeech.media.audio import load_audio
from facespeech.media.probe import probe
from facespeech.media.video import iter_video_frames
from facespeech.media.writer import VideoWriter
from facespeech.preprocess.audio_features import normalise_loudness

# Near-lossless: the joined video is an intermediate that the crops are cut from.
JOIN_CRF = 12
SAMPLES_PER_FRAME = dataset.SAMPLE_RATE // dataset.FPS


@dataclass(frozen=True)
class JoinedVideo:
    video: Path
    audio: Path
    segment_starts: list[int]  # 1-based frame number where each source video begins


def join_videos(
    videos: Sequence[Path], work: Path, check_stop: Callable[[], None] = lambda: None
) -> JoinedVideo:
    """Write work/joined.mp4 (video only) and work/joined.wav; reuse them when a finished
    join is already there (a resumed run). Every video needs its sound (the caller checks)."""
    video_path, audio_path, starts_file = (work / "joined.mp4", work / "joined.wav",
                                           work / "joined.starts")
    if video_path.is_file() and audio_path.is_file() and starts_file.is_file():
        starts = [int(v) for v in starts_file.read_text().split()]
        return JoinedVideo(video_path, audio_path, starts)
    main = probe(videos[-1])
    width, height = main.width - main.width % 2, main.height - main.height % 2
    work.mkdir(parents=True, exist_ok=True)
    tmp_video = video_path.with_name("joined.tmp.mp4")
    waves, starts, frames_so_far = [], [], 0
    with VideoWriter(tmp_video, dataset.FPS, width, height, crf=JOIN_CRF) as writer:
        for video in videos:
            starts.append(frames_so_far + 1)
            count = 0
            for count, frame in enumerate(iter_video_frames(video, dataset.FPS), start=1):
                if count % 250 == 0:
                    check_stop()
                writer.write(letterbox(frame, width, height))
            frames_so_far += count
            waves.append(_fitted_wave(video, count))
    sf.write(audio_path, np.concatenate(waves), dataset.SAMPLE_RATE, subtype="PCM_16")
    tmp_video.replace(video_path)
    starts_file.write_text(" ".join(map(str, starts)))
    return JoinedVideo(video_path, audio_path, starts)


def _fitted_wave(video: Path, frames: int) -> np.ndarray:
    """The video's speech at the common loudness, cut or padded with silence to exactly its
    frames' length, so the next video's sound starts with its first frame."""
    wave = normalise_loudness(load_audio(video, dataset.SAMPLE_RATE))
    length = frames * SAMPLES_PER_FRAME
    return np.pad(wave[:length], (0, max(0, length - wave.size)))


def letterbox(frame: np.ndarray, width: int, height: int) -> np.ndarray:
    """Scale an RGB frame to fit width x height keeping its aspect ratio; pad with black."""
    h, w = frame.shape[:2]
    if (w, h) == (width, height):
        return frame
    scale = min(width / w, height / h)
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    scaled = cv2.resize(frame, size, interpolation=cv2.INTER_AREA if scale < 1 else
                        cv2.INTER_CUBIC)
    out = np.zeros((height, width, 3), dtype=np.uint8)
    top, left = (height - size[1]) // 2, (width - size[0]) // 2
    out[top : top + size[1], left : left + size[0]] = scaled
    return out
