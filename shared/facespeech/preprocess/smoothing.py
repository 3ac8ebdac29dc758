"""Landmark smoothing without lag, and the jitter it removes.

The One-Euro filter (Casiez, Roussel & Vogel, CHI 2012) low-passes each coordinate with a
cutoff that rises with speed: still landmarks are smoothed hard, moving ones follow closely.
Run causally it still lags a little on slow motion; run forward and then backward over the
whole track (we have it all, offline) the two lags cancel.
"""

from __future__ import annotations

import numpy as np

from facespeech.preprocess.pose import MESH_POINTS, SUBNASALE, mean_shape, umeyama


def _alpha(cutoff_hz: np.ndarray | float, rate_hz: float) -> np.ndarray | float:
    tau = 1.0 / (2 * np.pi * cutoff_hz)
    return 1.0 / (1.0 + tau * rate_hz)


def one_euro(
    values: np.ndarray, rate_hz: float, min_cutoff_hz: float, beta: float,
    derivative_cutoff_hz: float = 1.0,
) -> np.ndarray:
    """Causal One-Euro over axis 0 of (N, ...) values; beta in 1 / (value units)."""
    out = np.empty_like(values, dtype=np.float64)
    if len(values) == 0:
        return out
    smoothed = values[0].astype(np.float64)
    speed = np.zeros_like(smoothed)
    out[0] = smoothed
    alpha_d = _alpha(derivative_cutoff_hz, rate_hz)
    for i in range(1, len(values)):
        raw_speed = (values[i] - smoothed) * rate_hz
        speed = speed + alpha_d * (raw_speed - speed)
        alpha = _alpha(min_cutoff_hz + beta * np.abs(speed), rate_hz)
        smoothed = smoothed + alpha * (values[i] - smoothed)
        out[i] = smoothed
    return out


def smooth_landmarks(
    landmarks: np.ndarray, rate_hz: float, min_cutoff_hz: float, beta_per_height: float
) -> np.ndarray:
    """Zero-lag One-Euro (forward, then backward) of (N, K, D) landmarks.

    beta is given per face height per second, so the filter acts the same at any crop size.
    """
    if len(landmarks) < 3:
        return landmarks.astype(np.float64)
    height = float(np.median(np.linalg.norm(landmarks[:, 10, :2] - landmarks[:, 152, :2],
                                            axis=-1)))
    beta = beta_per_height / max(height, 1e-6)
    forward = one_euro(landmarks, rate_hz, min_cutoff_hz, beta)
    return one_euro(forward[::-1], rate_hz, min_cutoff_hz, beta)[::-1].copy()


def landmark_jitter(landmarks: np.ndarray, rigid_only: bool = True) -> float:
    """Mean frame-to-frame motion of (N, K, 3) landmarks after removing the head's pose,
    in thousandths of the face height. With rigid_only, only the upper face (no lips or
    jaw, which move with speech) counts."""
    points = landmarks[:, :MESH_POINTS].astype(np.float64)
    canonical = mean_shape(points)
    selected = (np.flatnonzero(canonical[:, 1] <= canonical[SUBNASALE, 1]) if rigid_only
                else np.arange(MESH_POINTS))
    aligned = []
    for frame in points:
        scale, rotation, shift = umeyama(frame[selected], canonical[selected])
        aligned.append(scale * frame[selected] @ rotation.T + shift)
    steps = np.linalg.norm(np.diff(np.array(aligned), axis=0), axis=-1)
    height = np.linalg.norm(canonical[10, :2] - canonical[152, :2])
    return float(1000 * steps.mean() / max(height, 1e-9))


def stillest_segment(rotations: np.ndarray, translations: np.ndarray, length: int) -> int:
    """Start of the `length`-frame window where the head moves least (rotation steps in
    radians plus translation steps relative to depth)."""
    if len(rotations) <= length:
        return 0
    relative = np.einsum("nij,nkj->nik", rotations[1:], rotations[:-1])
    angles = np.arccos(np.clip((np.trace(relative, axis1=1, axis2=2) - 1) / 2, -1, 1))
    shifts = np.linalg.norm(np.diff(translations, axis=0), axis=-1) / np.maximum(
        np.abs(translations[1:, 2]), 1e-6)
    motion = np.concatenate([[0.0], np.cumsum(angles + shifts)])
    window = motion[length - 1:] - motion[: len(motion) - length + 1]
    return int(np.argmin(window))
