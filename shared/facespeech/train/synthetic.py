"""A small synthetic talking-head dataset in the dataset layout, for tests and smoke runs.

A drawn face (skin ellipse, eyes, mouth) turns its head a little and opens its mouth with
the loudness of a synthetic voice (tone bursts), so a model can learn audio -> mouth from it.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import soundfile
from PIL import Image, ImageDraw

from facespeech.dataset import (
    FPS,
    SAMPLE_RATE,
    DatasetInfo,
    FrameExpression,
    FramePose,
    PersonTrack,
    audio_path,
    features_path,
    image_path,
    mask_path,
    write_metadata,
)
from facespeech.train.data import _LIPS_MEDIAPIPE


def synthetic_voice(seconds: float, seed: int = 0) -> np.ndarray:
    """Syllable-like tone bursts with pauses, float32 at SAMPLE_RATE."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * SAMPLE_RATE)) / SAMPLE_RATE
    syllable = rng.uniform(0.12, 0.3, size=int(seconds * 8) + 1).cumsum()
    envelope = np.zeros_like(t)
    for start, end in zip(syllable[::2], syllable[1::2], strict=False):
        inside = (t >= start) & (t < end)
        envelope[inside] = np.sin(np.pi * (t[inside] - start) / (end - start))
    pitch = 140 + 30 * np.sin(2 * np.pi * 0.5 * t)
    voice = np.sin(2 * np.pi * np.cumsum(pitch) / SAMPLE_RATE) + 0.3 * np.sin(
        2 * np.pi * 3 * np.cumsum(pitch) / SAMPLE_RATE)
    return (0.3 * envelope * voice).astype(np.float32)


def make_synthetic_dataset(
    root: Path, seconds: float = 4.0, size: int = 64, person: str = "synth", seed: int = 0
) -> Path:
    """Write `seconds` of synthetic talking head at `size`^2 under root; last 10 % held out."""
    from facespeech.preprocess.audio_features import log_mel

    clip = "clip"
    wave = synthetic_voice(seconds, seed)
    n_frames = int(round(seconds * FPS))
    frame_energy = np.array([
        np.abs(wave[i * SAMPLE_RATE // FPS : (i + 1) * SAMPLE_RATE // FPS]).mean()
        for i in range(n_frames)
    ])
    opening = np.clip(frame_energy / (frame_energy.max() + 1e-8), 0, 1)
    poses, expressions, landmarks = [], [], []
    for i in range(n_frames):
        frame = i + 1
        yaw = 0.15 * np.sin(2 * np.pi * i / 50)
        blink = 1.0 if i % 40 in (0, 1) else 0.0
        image, mask, lips = _draw_face(size, yaw, opening[i], blink)
        for path, picture in ((image_path(root, person, frame), image),
                              (mask_path(root, person, frame), mask)):
            path.parent.mkdir(parents=True, exist_ok=True)
            picture.save(path)
        rotation = [[np.cos(yaw), 0.0, np.sin(yaw)], [0.0, 1.0, 0.0],
                    [-np.sin(yaw), 0.0, np.cos(yaw)]]
        poses.append(FramePose(frame, rotation, [0.0, 0.0, 2.0], 2.0 * size, [0, 0, size]))
        # the drawn lips change only by opening: their shape besides it is constant
        expressions.append(FrameExpression(frame, blink, float(opening[i]), [float(opening[i])],
                                           lips=[0.0]))
        landmarks.append(lips)
    held_out = max(1, n_frames // 10)
    track = PersonTrack(person, clip, poses, expressions, landmarks,
                        list(range(1, n_frames - held_out + 1)),
                        list(range(n_frames - held_out + 1, n_frames + 1)))
    write_metadata(root, DatasetInfo(FPS, size, [person], {person: clip}, "synthetic"), [track])
    audio_path(root, person, clip).parent.mkdir(parents=True, exist_ok=True)
    soundfile.write(audio_path(root, person, clip), wave, SAMPLE_RATE)
    features_path(root, person, clip).parent.mkdir(parents=True, exist_ok=True)
    np.save(features_path(root, person, clip), log_mel(wave).astype(np.float16))
    return root


def _draw_face(
    size: int, yaw: float, opening: float, blink: float
) -> tuple[Image.Image, Image.Image, list[list[float]]]:
    s = size / 64  # drawn at 64 px units
    cx = 32 * s + yaw * 40 * s
    image = Image.new("RGB", (size, size), (60, 90, 130))
    mask = Image.new("L", (size, size), 0)
    draw, mask_draw = ImageDraw.Draw(image), ImageDraw.Draw(mask)
    face = (cx - 18 * s, 10 * s, cx + 18 * s, 56 * s)
    draw.rectangle((cx - 22 * s, 50 * s, cx + 22 * s, 64 * s), fill=(40, 40, 40))  # torso
    draw.ellipse(face, fill=(225, 180, 150))
    mask_draw.ellipse(face, fill=255)
    eye_h = max(0.5, 3 * s * (1 - blink))
    for ex in (cx - 8 * s, cx + 8 * s):
        draw.ellipse((ex - 3 * s, 26 * s - eye_h, ex + 3 * s, 26 * s + eye_h), fill=(30, 30, 30))
    mouth_h = 1 * s + 6 * s * opening
    mouth = (cx - 7 * s, 44 * s - mouth_h, cx + 7 * s, 44 * s + mouth_h)
    draw.ellipse(mouth, fill=(120, 20, 30))
    angles = np.linspace(0, 2 * np.pi, len(_LIPS_MEDIAPIPE), endpoint=False)
    lips = np.stack([cx + 7 * s * np.cos(angles), 44 * s + mouth_h * np.sin(angles)], axis=1)
    points = np.tile([[cx, 32 * s]], (478, 1))  # the nose tip (1) among them
    points[[33, 263]] = [[cx - 11 * s, 26 * s], [cx + 11 * s, 26 * s]]  # outer eye corners
    points[_LIPS_MEDIAPIPE] = lips
    return image, mask, points.round(2).tolist()
