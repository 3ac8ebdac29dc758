"""The square crop box per frame: placed from landmarks, smoothed, cut and resized."""

from __future__ import annotations

import cv2
import numpy as np
from scipy.ndimage import gaussian_filter1d

from facespeech.preprocess.tracking import face_height

# Face-oval landmarks of FaceMesh (FACEMESH_FACE_OVAL), in order around the face.
FACE_OVAL = [
    10, 338, 297, 332, 284, 251, 389, 356, 454, 323, 361, 288, 397, 365, 379, 378, 400, 377,
    152, 148, 176, 149, 150, 136, 172, 58, 132, 93, 234, 127, 162, 21, 54, 103, 67, 109,
]


def raw_boxes(
    landmarks: np.ndarray, crop_scale: float, shift_down: float
) -> np.ndarray:
    """(N, 478, 3) source-pixel landmarks -> (N, 3) boxes: centre x, centre y, side."""
    oval = landmarks[:, FACE_OVAL, :2]
    centres = (oval.min(axis=1) + oval.max(axis=1)) / 2
    heights = np.array([face_height(f) for f in landmarks])
    # Face height, not the oval's box: it does not grow when the head turns sideways.
    sides = crop_scale * heights
    centres[:, 1] += shift_down * heights
    return np.column_stack([centres, sides])


def smooth_boxes(boxes: np.ndarray, center_sigma: float, size_sigma: float) -> np.ndarray:
    """Zero-phase Gaussian over time: the box follows the head without lag or jitter."""
    smoothed = boxes.astype(np.float64).copy()
    if len(boxes) < 2:
        return smoothed
    for column, sigma in ((0, center_sigma), (1, center_sigma), (2, size_sigma)):
        smoothed[:, column] = gaussian_filter1d(smoothed[:, column], sigma, mode="nearest")
    return smoothed


def keep_inside(boxes: np.ndarray, width: int, height: int) -> np.ndarray:
    """Shrink boxes to the frame's short side and shift them inside: no black borders
    unless the frame itself is too small. Applied after smoothing, so it only bends the
    path where the head nears an edge."""
    inside = boxes.copy()
    inside[:, 2] = np.minimum(inside[:, 2], min(width, height))
    half = inside[:, 2] / 2
    inside[:, 0] = np.clip(inside[:, 0], half, width - half)
    inside[:, 1] = np.clip(inside[:, 1], half, height - half)
    return inside


def box_origin(box: np.ndarray) -> tuple[float, float, float]:
    """Top-left corner and side of a (cx, cy, side) box, as stored in FramePose.crop_box."""
    cx, cy, side = (float(v) for v in box)
    return cx - side / 2, cy - side / 2, side


def cut_crop(frame: np.ndarray, box: np.ndarray, image_size: int) -> np.ndarray:
    """Resample the box of `frame` to image_size x image_size; outside the frame is black."""
    x0, y0, side = box_origin(box)
    scale = image_size / side
    affine = np.array([[scale, 0, -x0 * scale], [0, scale, -y0 * scale]], dtype=np.float64)
    interpolation = cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR
    return cv2.warpAffine(
        frame, affine, (image_size, image_size), flags=interpolation,
        borderMode=cv2.BORDER_CONSTANT, borderValue=(0, 0, 0),
    )


def to_crop_pixels(landmarks: np.ndarray, box: np.ndarray, image_size: int) -> np.ndarray:
    """Source-pixel landmarks (K, 3) -> crop pixels; z scaled the same as x and y."""
    x0, y0, side = box_origin(box)
    scale = image_size / side
    return (landmarks - np.array([x0, y0, 0.0])) * scale


def face_mask(landmarks_crop: np.ndarray, image_size: int, dilate_px: int) -> np.ndarray:
    """uint8 mask (255 = face): convex hull of the landmarks, dilated to take in the edges."""
    mask = np.zeros((image_size, image_size), dtype=np.uint8)
    hull = cv2.convexHull(np.round(landmarks_crop[:, :2]).astype(np.int32))
    cv2.fillConvexPoly(mask, hull, 255)
    return grow_polygon(mask, hull, dilate_px)


def grow_polygon(mask: np.ndarray, polygon: np.ndarray, pixels: int) -> np.ndarray:
    """Dilate a filled polygon by `pixels`: its outline drawn `2 * pixels` thick (round
    joins) is the same as a disc dilation, at a fraction of the cost of cv2.dilate."""
    if pixels > 0:
        cv2.polylines(mask, [polygon.reshape(-1, 1, 2)], True, 255, thickness=2 * pixels + 1,
                      lineType=cv2.LINE_8)
    return mask
