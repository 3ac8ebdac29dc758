"""A phone-style clip: stored sideways with a display rotation, at a variable frame rate."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import av
import numpy as np


def write_phone_clip(path: Path, frames: list[np.ndarray], audio: np.ndarray,
                     sample_rate: int = 16_000, fps: float = 25.0, seed: int = 0) -> Path:
    """Frames (upright RGB) stored turned 90° clockwise, with a display rotation of +90°
    (counterclockwise) that turns them back; frame times jitter around `fps`."""
    rng = np.random.default_rng(seed)
    gaps_ms = np.clip(rng.normal(1000 / fps, 8, len(frames)), 20, 70).round().astype(int)
    times_ms = np.concatenate([[0], np.cumsum(gaps_ms)[:-1]])
    stored = [np.ascontiguousarray(np.rot90(f, -1)) for f in frames]
    height, width = stored[0].shape[:2]
    with av.open(str(path), mode="w") as container:
        video = container.add_stream("libx264", rate=30)
        video.width, video.height, video.pix_fmt = width, height, "yuv420p"
        video.codec_context.time_base = Fraction(1, 1000)
        video.time_base = Fraction(1, 1000)
        video.set_display_rotation(90)
        sound = container.add_stream("aac", rate=sample_rate)
        sound.layout = "mono"
        for rgb, time_ms in zip(stored, times_ms, strict=True):
            frame = av.VideoFrame.from_ndarray(rgb, format="rgb24")
            frame.pts, frame.time_base = int(time_ms), Fraction(1, 1000)
            container.mux(video.encode(frame))
        container.mux(video.encode(None))
        chunk = av.AudioFrame.from_ndarray(audio.astype(np.float32).reshape(1, -1), format="flt",
                                           layout="mono")
        chunk.sample_rate, chunk.pts = sample_rate, 0
        container.mux(sound.encode(chunk))
        container.mux(sound.encode(None))
    return path
