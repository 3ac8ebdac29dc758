"""Rigid head pose and expression codes from 3D landmarks.

Pose: a similarity (Umeyama) fit of the clip's mean face shape to each frame's FaceMesh 3D
landmarks in crop pixels. FaceMesh z is a relative depth in the x scale, so the fit is a
weak-perspective one; we turn its scale into depth with a fixed focal length (a monocular
landmark fit cannot tell focal length from distance). Rotations are relative to the clip's
mean head orientation, which is close to frontal for talking-head footage.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
from scipy.ndimage import gaussian_filter1d

# Eye contour points for the eye aspect ratio: outer corner, inner corner, two lid pairs.
RIGHT_EYE = (33, 133, (160, 144), (158, 153))
LEFT_EYE = (263, 362, (387, 373), (385, 380))
UPPER_INNER_LIP, LOWER_INNER_LIP = 13, 14
FOREHEAD, CHIN = 10, 152
SUBNASALE = 2  # below the nose: the rigid upper face ends here
# FaceMesh's outer and inner lip contours (40 points): the mouth's shape, and what LMD scores.
LIP_POINTS = [61, 146, 91, 181, 84, 17, 314, 405, 321, 375, 291, 409, 270, 269, 267, 0, 37, 39,
              40, 185, 78, 95, 88, 178, 87, 14, 317, 402, 318, 324, 308, 415, 310, 311, 312, 13,
              82, 81, 80, 191]
MESH_POINTS = 468  # iris points left out of shape fits: they move with gaze, not the head
# An eye counts as fully closed at this fraction of its open aspect ratio.
CLOSED_EAR_FRACTION = 0.35


@dataclass
class PoseFit:
    rotations: np.ndarray  # (N, 3, 3) head-to-camera
    translations: np.ndarray  # (N, 3) in crop-normalised units (crop side = 1)
    focal: float  # crop pixels
    normalised: np.ndarray  # (N, 478, 3) landmarks with the pose removed, canonical units


def umeyama(source: np.ndarray, target: np.ndarray) -> tuple[float, np.ndarray, np.ndarray]:
    """Least-squares similarity: target ~ scale * rotation @ source + translation."""
    mu_s, mu_t = source.mean(axis=0), target.mean(axis=0)
    s, t = source - mu_s, target - mu_t
    u, singular, vt = np.linalg.svd(t.T @ s / len(source))
    d = np.diag([1.0, 1.0, np.sign(np.linalg.det(u @ vt))])  # no reflections
    rotation = u @ d @ vt
    scale = float(np.trace(np.diag(singular) @ d) / s.var(axis=0).sum())
    return scale, rotation, mu_t - scale * rotation @ mu_s


def umeyama_batch(
    source: np.ndarray, targets: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """umeyama of one (K, 3) source against each of (N, K, 3) targets, vectorised:
    scales (N,), rotations (N, 3, 3), translations (N, 3)."""
    mu_s, mu_t = source.mean(axis=0), targets.mean(axis=1)
    s, t = source - mu_s, targets - mu_t[:, None]
    u, singular, vt = np.linalg.svd(np.einsum("nki,kj->nij", t, s) / len(source))
    signs = np.sign(np.linalg.det(u @ vt))
    d = np.ones((len(targets), 3))
    d[:, 2] = signs
    rotations = (u * d[:, None, :]) @ vt
    scales = (singular * d).sum(axis=1) / s.var(axis=0).sum()
    translations = mu_t - scales[:, None] * np.einsum("nij,j->ni", rotations, mu_s)
    return scales, rotations, translations


def mean_shape(landmarks: np.ndarray, iterations: int = 3, max_shapes: int = 500) -> np.ndarray:
    """Generalised Procrustes mean of (N, K, 3) shapes, centred, in units of the crop side.

    At most `max_shapes` evenly spaced shapes take part: more do not change the mean.
    """
    step = max(1, -(-len(landmarks) // max_shapes))
    points = landmarks[::step, :MESH_POINTS]
    reference = points[len(points) // 2] - points[len(points) // 2].mean(axis=0)
    for _ in range(iterations):
        aligned = []
        for shape in points:
            scale, rotation, translation = umeyama(shape, reference)
            aligned.append(scale * shape @ rotation.T + translation)
        reference = np.mean(aligned, axis=0)
        reference -= reference.mean(axis=0)
    return reference


def fit_poses(
    landmarks_crop: np.ndarray, image_size: int, smooth_sigma: float = 1.5,
    focal_factor: float = 2.0, breaks: Sequence[int] = (),
) -> PoseFit:
    """Per-frame rigid pose of (N, 478, 3) crop-pixel landmarks against their mean shape.

    Only the upper face takes part in the fit: lips and jaw move with speech, and letting
    them in turns every open mouth into a head nod. Rotation, scale and shift are then
    smoothed over time with a zero-phase Gaussian (FaceMesh depth is noisy frame to frame),
    each run between `breaks` (row indices where another joined video begins) on its own.
    """
    canonical = mean_shape(landmarks_crop / image_size)
    rigid = np.flatnonzero(canonical[:, 1] <= canonical[SUBNASALE, 1])
    raw_scales, raw_rotations, raw_shifts = umeyama_batch(canonical[rigid],
                                                          landmarks_crop[:, rigid])
    scales = _smooth_runs(_smooth, raw_scales, smooth_sigma, breaks)
    rotations = _smooth_runs(smooth_rotations, raw_rotations, smooth_sigma, breaks)
    shifts = _smooth_runs(_smooth, raw_shifts, smooth_sigma, breaks)
    focal = focal_factor * image_size
    centre = image_size / 2
    depth = focal / scales  # weak perspective: image scale = focal / depth
    translations = np.column_stack([(shifts[:, :2] - centre) / scales[:, None], depth])
    normalised = np.einsum("nkj,nji->nki", landmarks_crop - shifts[:, None], rotations)
    normalised /= scales[:, None, None]
    return PoseFit(rotations, translations, focal, normalised)


def _smooth_runs(smooth: Callable[[np.ndarray, float], np.ndarray], values: np.ndarray,
                 sigma: float, breaks: Sequence[int]) -> np.ndarray:
    cuts = [b for b in breaks if 0 < b < len(values)]
    return np.concatenate([smooth(run, sigma) for run in np.split(values, cuts)])


def _smooth(values: np.ndarray, sigma: float) -> np.ndarray:
    return gaussian_filter1d(values, sigma, axis=0, mode="nearest") if sigma > 0 else values


def smooth_rotations(rotations: np.ndarray, sigma: float) -> np.ndarray:
    """Gaussian-average (N, 3, 3) rotations over time, then project back onto SO(3)."""
    averaged = _smooth(rotations, sigma)
    u, _, vt = np.linalg.svd(averaged)
    signs = np.sign(np.linalg.det(u @ vt))
    u[:, :, 2] *= signs[:, None]
    return u @ vt


def eye_aspect_ratio(landmarks: np.ndarray) -> np.ndarray:
    """(N, K, 3) -> (N,) mean of both eyes' lid gap over eye width (Soukupova & Cech 2016)."""
    ratios = []
    for outer, inner, (top_a, bottom_a), (top_b, bottom_b) in (RIGHT_EYE, LEFT_EYE):
        width = np.linalg.norm(landmarks[:, outer] - landmarks[:, inner], axis=-1)
        gap_a = np.linalg.norm(landmarks[:, top_a] - landmarks[:, bottom_a], axis=-1)
        gap_b = np.linalg.norm(landmarks[:, top_b] - landmarks[:, bottom_b], axis=-1)
        ratios.append((gap_a + gap_b) / (2 * np.maximum(width, 1e-6)))
    return np.mean(ratios, axis=0)


def blink_codes(normalised: np.ndarray) -> np.ndarray:
    """0 = eyes as open as usual for this person, 1 = closed; the open level is per clip."""
    ear = eye_aspect_ratio(normalised)
    open_ear = float(np.percentile(ear, 90))
    closed_ear = CLOSED_EAR_FRACTION * open_ear
    return np.clip((open_ear - ear) / max(open_ear - closed_ear, 1e-6), 0.0, 1.0)


def mouth_opening(normalised: np.ndarray) -> np.ndarray:
    """Inner-lip gap over face height, on pose-free landmarks (head pitch does not leak in)."""
    gap = np.linalg.norm(normalised[:, UPPER_INNER_LIP] - normalised[:, LOWER_INNER_LIP], axis=-1)
    height = np.linalg.norm(normalised[:, FOREHEAD] - normalised[:, CHIN], axis=-1)
    return gap / np.maximum(height, 1e-6)


def expression_codes(normalised: np.ndarray, dims: int, max_fit_frames: int = 1000
                     ) -> np.ndarray:
    """PCA of pose-free mesh landmarks: (N, dims), each component scaled to unit variance."""
    flat = normalised[:, :MESH_POINTS].reshape(len(normalised), -1)
    return _principal_codes(flat - flat.mean(axis=0), dims, max_fit_frames)


def lip_codes(normalised: np.ndarray, opening: np.ndarray, dims: int,
              max_fit_frames: int = 1000) -> np.ndarray:
    """The lips' shape besides their opening: (N, dims) unit-variance principal components of
    the pose-free lip contours, after the part that moves linearly with `opening` is removed.

    Whole-face components (expression_codes) mix the mouth with brows, gaze and pose residue
    that speech does not predict; and a shape code that also carries the opening would let a
    renderer open the mouth from components an audio model predicts worse than the opening.
    """
    flat = normalised[:, LIP_POINTS].reshape(len(normalised), -1)
    centred = flat - flat.mean(axis=0)
    spread = opening - opening.mean()
    slope = centred.T @ spread / max(float(spread @ spread), 1e-12)
    return _principal_codes(centred - np.outer(spread, slope), dims, max_fit_frames)


def _principal_codes(centred: np.ndarray, dims: int, max_fit_frames: int) -> np.ndarray:
    """Project (N, D) centred rows onto their first `dims` principal directions, each scaled
    to unit variance; missing components (fewer rows than dims) stay zero.

    The directions are found on at most `max_fit_frames` evenly spaced rows (the SVD of every
    frame of a long clip costs seconds and finds the same directions); all rows are then
    projected onto them.
    """
    step = max(1, -(-len(centred) // max_fit_frames))
    _, singular, vt = np.linalg.svd(centred[::step], full_matrices=False)
    dims_kept = min(dims, len(singular))
    projected = centred @ vt[:dims_kept].T
    std = projected.std(axis=0, ddof=1) if len(centred) > 1 else np.ones(dims_kept)
    codes = np.zeros((len(centred), dims), dtype=np.float64)
    codes[:, :dims_kept] = projected / np.maximum(std, 1e-9)
    return codes
