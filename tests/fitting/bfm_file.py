"""A small synthetic Basel Face Model file in the BFM09_model_info.mat format."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import scipy.io


def write_model(path: Path, seed: int = 0) -> Path:
    """A 12 x 12 height-field 'face' (y up, looking along +z) in the BFM09 file format."""
    rng = np.random.default_rng(seed)
    u, v = np.meshgrid(np.linspace(-1, 1, 12), np.linspace(-1, 1, 12))
    mean = np.stack([u, v, 0.6 * np.exp(-(u**2 + v**2))], -1).reshape(-1, 3)
    count = len(mean)
    grid = np.arange(count).reshape(12, 12)
    quads = np.stack([grid[:-1, :-1], grid[:-1, 1:], grid[1:, 1:], grid[1:, :-1]], -1)
    quads = quads.reshape(-1, 4)
    tri = np.concatenate([quads[:, [0, 1, 2]], quads[:, [0, 2, 3]]]) + 1
    scipy.io.savemat(path, {
        "meanshape": mean.reshape(1, -1) * 100,
        "idBase": rng.normal(scale=3.0, size=(3 * count, 10)),
        "exBase": rng.normal(scale=3.0, size=(3 * count, 6)),
        "meantex": np.full((1, 3 * count), 150.0),
        "texBase": rng.normal(scale=5.0, size=(3 * count, 5)),
        "tri": tri,
        "keypoints": (rng.choice(count, 68, replace=False) + 1).reshape(1, -1),
    })
    return path
