"""Per-frame masks in crop pixels: the face mask and a label map of face, mouth, neck/torso.

The face and mouth come from the landmarks; the person/background split from MediaPipe's
selfie segmentation; the neck and torso are the person's pixels below the jaw line.
"""

from __future__ import annotations

import cv2
import numpy as np

from facespeech import dataset
from facespeech.preprocess.crop import FACE_OVAL, face_mask, grow_polygon

# Outer lip contour of FaceMesh (FACEMESH_LIPS, outer ring), in order around the mouth.
OUTER_LIPS = [61, 146, 91, 181, 84, 17, 314, 405, 321, 375, 291, 409, 270, 269, 267, 0, 37, 39,
              40, 185]
# FACE_OVAL from the left cheek edge (454) round the chin (152) to the right one (234).
LOWER_OVAL = FACE_OVAL[FACE_OVAL.index(454): FACE_OVAL.index(234) + 1]
PERSON_THRESHOLD = 128  # of the 0..255 segmentation probability


def mouth_mask(landmarks_crop: np.ndarray, image_size: int, dilate_px: int) -> np.ndarray:
    mask = np.zeros((image_size, image_size), dtype=np.uint8)
    lips = np.round(landmarks_crop[OUTER_LIPS, :2]).astype(np.int32)
    cv2.fillPoly(mask, [lips], 255)
    return grow_polygon(mask, lips, dilate_px)


def below_jaw(landmarks_crop: np.ndarray, image_size: int) -> np.ndarray:
    """255 where a pixel lies below the jaw line (extended sideways to the image edges)."""
    jaw = landmarks_crop[LOWER_OVAL, :2]
    edge = image_size - 1
    polygon = np.vstack([jaw, [[0, jaw[-1, 1]], [0, edge], [edge, edge], [edge, jaw[0, 1]]]])
    mask = np.zeros((image_size, image_size), dtype=np.uint8)
    cv2.fillPoly(mask, [np.round(polygon).astype(np.int32)], 255)
    return mask


def semantic_mask(
    landmarks_crop: np.ndarray, person: np.ndarray | None, image_size: int, dilate_px: int
) -> tuple[np.ndarray, np.ndarray]:
    """(face mask 0/255, label map with dataset.LABEL_* values), both (S, S) uint8.

    Without a person mask (segmentation off) only face and mouth are labelled.
    """
    face = face_mask(landmarks_crop, image_size, dilate_px)
    labels = np.full((image_size, image_size), dataset.LABEL_BACKGROUND, dtype=np.uint8)
    if person is not None:
        is_person = person >= PERSON_THRESHOLD
        labels[is_person] = dataset.LABEL_OTHER_PERSON
        labels[is_person & (below_jaw(landmarks_crop, image_size) > 0)] = dataset.LABEL_NECK_TORSO
    labels[face > 0] = dataset.LABEL_FACE
    labels[mouth_mask(landmarks_crop, image_size, max(1, dilate_px // 2)) > 0] = (
        dataset.LABEL_MOUTH
    )
    return face, labels


def warp_to_crop(
    mask: np.ndarray, to_source: tuple[float, float, float], box_origin: tuple[float, float, float],
    image_size: int,
) -> np.ndarray:
    """A mask of some image region -> crop pixels.

    `to_source` = (origin x, origin y, scale): source = mask_px / scale + origin;
    `box_origin` = (x0, y0, side) of the crop in source pixels.
    """
    origin_x, origin_y, scale = to_source
    x0, y0, side = box_origin
    k = image_size / side
    affine = np.array([[k / scale, 0, (origin_x - x0) * k], [0, k / scale, (origin_y - y0) * k]])
    return cv2.warpAffine(mask, affine, (image_size, image_size), flags=cv2.INTER_NEAREST,
                          borderMode=cv2.BORDER_CONSTANT, borderValue=0)
