"""Video frames as RGB arrays at a fixed frame rate, streamed."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import av
import numpy as np

from facespeech.errors import InputError
from facespeech.media._open import open_input


def iter_video_frames(
    path: Path, fps: float = 25.0, max_side: int | None = None, skip: int = 0
) -> Iterator[np.ndarray]:
    """Yield RGB uint8 (H, W, 3) frames resampled to `fps` by presentation time.

    Output frame k shows the source frame nearest to time k / fps (counted from the first
    frame), so frames are dropped or repeated as needed; variable frame rate works too.
    Only the current and previous decoded frames are held: memory does not grow with length.
    The first `skip` output frames are decoded (the timing needs them) but not converted
    nor yielded: a resumed job passes over what it has done at a fraction of the cost.
    """
    with open_input(path) as container:
        if not container.streams.video:
            raise InputError(f"{path.name}: no video stream")
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"  # frame + slice threads: decoding is the costly part
        size = _output_size(stream.codec_context.width, stream.codec_context.height, max_side)

        def to_rgb(frame: av.VideoFrame) -> np.ndarray:
            rgb = frame.to_ndarray(format="rgb24", width=size[0], height=size[1])
            return upright(rgb, frame.rotation)

        start: float | None = None
        previous: av.VideoFrame | None = None
        previous_time = 0.0
        frame_gap = 1.0 / float(stream.average_rate or stream.guessed_rate or fps)
        next_index = 0
        for frame in container.decode(stream):
            if frame.time is None:
                continue
            start = frame.time if start is None else start
            time = frame.time - start
            if previous is not None:
                frame_gap = max(time - previous_time, 1e-3)
                midpoint = (previous_time + time) / 2
                rgb = None
                while next_index / fps < midpoint:
                    if next_index >= skip:
                        rgb = to_rgb(previous) if rgb is None else rgb
                        yield rgb
                    next_index += 1
            previous, previous_time = frame, time
        if previous is None:
            raise InputError(f"{path.name}: the video stream has no decodable frame")
        # The last frame is shown for one frame interval, as a player would.
        end = previous_time + frame_gap
        rgb = None
        while next_index / fps < end - 1e-6:
            if next_index >= skip:
                rgb = to_rgb(previous) if rgb is None else rgb
                yield rgb
            next_index += 1


def upright(rgb: np.ndarray, rotation: float) -> np.ndarray:
    """Apply a display-matrix rotation (degrees counterclockwise, as phones record it) so
    the frame shows as a player would show it."""
    turns = round(rotation / 90) % 4
    return np.ascontiguousarray(np.rot90(rgb, turns)) if turns else rgb


def _output_size(width: int, height: int, max_side: int | None) -> tuple[int, int]:
    if max_side is None or max(width, height) <= max_side:
        return width, height
    scale = max_side / max(width, height)
    return max(1, round(width * scale)), max(1, round(height * scale))
