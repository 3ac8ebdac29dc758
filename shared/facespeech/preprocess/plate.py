"""The clean background plate: per pixel, the median over frames where it is background."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

BAND_ROWS = 32  # rows per median band: bounds the sorted copy to samples x 32 rows
PERSON_THRESHOLD = 64  # of 0..255: pixels even a little likely to be the person are left out


def background_plate(samples: Path, max_samples: int) -> tuple[np.ndarray, float] | None:
    """RGB plate from the sampled frames (NNNNNN.jpg) and person masks (NNNNNN.png) in
    `samples`, and the fraction of pixels that no sample showed as background (filled by
    inpainting). None when there are no samples."""
    names = sorted(p.stem for p in samples.glob("*.jpg") if p.with_suffix(".png").is_file())
    if not names:
        return None
    step = max(1, int(np.ceil(len(names) / max_samples)))
    names = names[::step]
    frames = np.stack([cv2.imread(str(samples / f"{n}.jpg"))[:, :, ::-1] for n in names])
    person = np.stack([cv2.imread(str(samples / f"{n}.png"), cv2.IMREAD_GRAYSCALE)
                       for n in names])
    # Grow the person a little: segmentation edges bleed hair and shoulders into the plate.
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (9, 9))
    person = np.stack([cv2.dilate(m, kernel) for m in person]) >= PERSON_THRESHOLD
    height, width = frames.shape[1:3]
    plate = np.zeros((height, width, 3), np.uint8)
    never_seen = np.zeros((height, width), bool)
    for top in range(0, height, BAND_ROWS):
        rows = slice(top, top + BAND_ROWS)
        # Median of the background samples only: person pixels sort past every real value
        # (as 256), and the median is read at each pixel's own middle rank.
        band = frames[:, rows].astype(np.uint16)
        hidden = person[:, rows]
        band[hidden] = 256
        band.sort(axis=0)
        visible = (~hidden).sum(axis=0)  # (rows, width)
        middle = np.maximum(visible - 1, 0) // 2
        median = np.take_along_axis(band, middle[None, :, :, None].repeat(3, axis=3), axis=0)[0]
        plate[rows] = np.where(visible[..., None] > 0, median, 0).astype(np.uint8)
        never_seen[rows] = visible == 0
    if never_seen.any():
        plate = cv2.inpaint(plate, never_seen.astype(np.uint8) * 255, 5, cv2.INPAINT_TELEA)
    return plate, float(never_seen.mean())
