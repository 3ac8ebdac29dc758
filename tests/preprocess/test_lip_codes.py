"""The lip-shape code: what the lips do besides opening, from pose-free landmarks."""

from __future__ import annotations

import numpy as np

from facespeech.preprocess.pose import LIP_POINTS, MESH_POINTS, lip_codes


def _talking_lips(frames: int = 400, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(N, 478, 3) landmarks whose lips open (lower lip down) and, independently, round
    (corners in): returns the landmarks, the opening and the rounding."""
    rng = np.random.default_rng(seed)
    base = rng.normal(size=(MESH_POINTS + 10, 3))
    opening = np.abs(np.sin(np.linspace(0, 40, frames))) * 0.2 + rng.normal(0, 0.01, frames)
    rounding = np.sin(np.linspace(0, 17, frames) + 1.0) * 0.1
    points = np.repeat(base[None], frames, axis=0)
    lips = np.array(LIP_POINTS)
    lower = lips[base[lips, 1] < 0]
    points[:, lower, 1] -= opening[:, None]
    points[:, lips, 0] *= 1.0 - rounding[:, None]
    points += rng.normal(0, 1e-3, points.shape)
    return points, opening, rounding


def test_the_code_holds_the_rounding_and_none_of_the_opening() -> None:
    points, opening, rounding = _talking_lips()
    codes = lip_codes(points, opening, dims=3)
    assert codes.shape == (len(points), 3)
    assert abs(np.corrcoef(codes[:, 0], opening)[0, 1]) < 0.05
    assert abs(np.corrcoef(codes[:, 0], rounding)[0, 1]) > 0.99
    assert np.allclose(codes.std(axis=0, ddof=1), 1.0, atol=1e-6)


def test_a_still_mouth_gives_a_finite_code() -> None:
    points, _, _ = _talking_lips(frames=5)
    still = np.repeat(points[:1], 5, axis=0)
    codes = lip_codes(still, np.zeros(5), dims=4)
    assert codes.shape == (5, 4) and np.isfinite(codes).all()


def test_one_frame_has_zero_code() -> None:
    points, opening, _ = _talking_lips(frames=1)
    assert not lip_codes(points, opening, dims=2).any()
