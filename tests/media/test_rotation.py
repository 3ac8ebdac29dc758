"""Phone clips: a display rotation is applied, and a variable frame rate is resampled."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from facespeech.media import iter_video_frames, probe
from tests.media.phone_clip import write_phone_clip


def test_rotated_variable_rate_clip_decodes_upright(tmp_path: Path) -> None:
    upright = []
    for i in range(60):  # 64 wide, 96 tall; a bright block at the top marks "up"
        frame = np.full((96, 64, 3), 40, np.uint8)
        frame[:20] = 220
        frame[:, : 1 + i % 10] = (i * 4) % 256
        upright.append(frame)
    clip = write_phone_clip(tmp_path / "phone.mp4", upright, np.zeros(32_000, np.float32))
    info = probe(clip)
    assert info.rotation == 90 and (info.width, info.height) == (64, 96)
    frames = list(iter_video_frames(clip, fps=25))
    assert frames[0].shape == (96, 64, 3)
    assert frames[0][:20, 20:].mean() > 180 and frames[0][40:, 20:].mean() < 80
    assert abs(len(frames) - info.duration_s * 25) <= 2
