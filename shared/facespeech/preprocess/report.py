"""The preprocessing report (JSON) and a contact sheet (PNG) to look at, in the dataset dir."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

import cv2
import numpy as np

from facespeech import dataset
from facespeech.preprocess.config import PreprocessReport

REPORT_NAME = "report.json"
CONTACT_SHEET_NAME = "contact_sheet.png"
TILE = 256
COLUMNS = 4
# Overlay colours (RGB) of the semantic labels: face, mouth, neck/torso, other person pixels.
LABEL_COLOURS = {
    dataset.LABEL_FACE: (60, 200, 60),
    dataset.LABEL_MOUTH: (230, 40, 40),
    dataset.LABEL_NECK_TORSO: (40, 120, 240),
    dataset.LABEL_OTHER_PERSON: (230, 200, 40),
}


def write_report(root: Path, report: PreprocessReport) -> Path:
    path = root / REPORT_NAME
    path.write_text(json.dumps(asdict(report), indent=2))
    return path


def contact_sheet(
    root: Path, person: str, frames: list[int], landmarks_crop: list[np.ndarray], size: int
) -> np.ndarray:
    """RGB grid: each chosen crop with its label overlay and landmarks, frame number on it."""
    rows = -(-len(frames) // COLUMNS)
    sheet = np.full((rows * TILE, COLUMNS * TILE, 3), 32, np.uint8)
    for slot, (frame, landmarks) in enumerate(zip(frames, landmarks_crop, strict=True)):
        tile = _tile(root, person, frame, landmarks, size)
        row, column = divmod(slot, COLUMNS)
        sheet[row * TILE:(row + 1) * TILE, column * TILE:(column + 1) * TILE] = tile
    return sheet


def _tile(root: Path, person: str, frame: int, landmarks: np.ndarray, size: int) -> np.ndarray:
    image = cv2.imread(str(dataset.image_path(root, person, frame)))[:, :, ::-1].copy()
    labels_path = dataset.semantic_path(root, person, frame)
    if labels_path.is_file():
        labels = cv2.imread(str(labels_path), cv2.IMREAD_GRAYSCALE)
        overlay = image.copy()
        for label, colour in LABEL_COLOURS.items():
            overlay[labels == label] = colour
        image = cv2.addWeighted(image, 0.6, overlay, 0.4, 0)
    else:
        face = cv2.imread(str(dataset.mask_path(root, person, frame)), cv2.IMREAD_GRAYSCALE)
        contours, _ = cv2.findContours(face, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
        cv2.drawContours(image, contours, -1, LABEL_COLOURS[dataset.LABEL_FACE], 2)
    tile = cv2.resize(image, (TILE, TILE), interpolation=cv2.INTER_AREA)
    scale = TILE / size
    for x, y in np.round(landmarks[:, :2] * scale).astype(int):
        cv2.circle(tile, (int(x), int(y)), 1, (255, 255, 255), -1)
    cv2.putText(tile, f"{frame:05d}", (6, 18), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (255, 255, 255), 1)
    return tile


def write_contact_sheet(root: Path, sheet: np.ndarray) -> Path:
    path = root / CONTACT_SHEET_NAME
    cv2.imwrite(str(path), cv2.cvtColor(sheet, cv2.COLOR_RGB2BGR))
    return path
