"""The face-alignment (FAN) landmark backend: 68 points from a local TorchScript model.

face-alignment's 2D-FAN weights are TorchScript files (e.g. 2DFAN4-cd938726ad.zip from the
project's release) that it downloads on first use; here they cannot be downloaded, so the
user gives their path (PreprocessConfig.fan_weights). The model takes a 256x256 RGB crop
around the face, scaled to [0, 1], and returns 68 heatmaps of 64x64; each landmark is its
heatmap's peak, moved a quarter pixel towards the higher neighbour (as face-alignment does).
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import torch

INPUT_SIDE = 256
N_POINTS = 68
# face-alignment's crop: a square 1.2 x the face box around its centre, moved up by
# 12 % of the box height (its `center[1] -= (bottom - top) * 0.12`, scale 195 px per 1.0).
BOX_SCALE = 1.2 * 200 / 195
CENTRE_SHIFT_UP = 0.12


class FanLandmarker:
    def __init__(self, weights: Path, device: str = "cpu") -> None:
        if not weights.is_file():
            raise FileNotFoundError(
                f"{weights}: face-alignment weights not found; give the path of a local "
                "2D-FAN TorchScript file (they cannot be downloaded here)"
            )
        self.device = torch.device(device)
        self.model = torch.jit.load(str(weights), map_location=self.device).eval()

    @torch.inference_mode()
    def landmarks(self, rgb: np.ndarray, face_box: tuple[float, float, float, float]
                  ) -> np.ndarray:
        """(68, 2) landmarks in `rgb` pixels for the face in box (x, y, width, height)."""
        x, y, width, height = face_box
        side = BOX_SCALE * max(width, height)
        cx, cy = x + width / 2, y + height / 2 - CENTRE_SHIFT_UP * height
        scale = INPUT_SIDE / side
        to_crop = np.array([[scale, 0, (side / 2 - cx) * scale],
                            [0, scale, (side / 2 - cy) * scale]])
        crop = cv2.warpAffine(rgb, to_crop, (INPUT_SIDE, INPUT_SIDE), flags=cv2.INTER_LINEAR)
        tensor = torch.from_numpy(crop).permute(2, 0, 1)[None].float().div(255).to(self.device)
        heatmaps = self.model(tensor)
        if isinstance(heatmaps, (list, tuple)):  # FAN returns one output per hourglass
            heatmaps = heatmaps[-1]
        points = peaks(heatmaps[0].float().cpu().numpy()) * (INPUT_SIDE / heatmaps.shape[-1])
        return (points - to_crop[:, 2]) / scale


def peaks(heatmaps: np.ndarray) -> np.ndarray:
    """(K, H, W) heatmaps -> (K, 2) x, y of each peak with a quarter-pixel refinement."""
    count, height, width = heatmaps.shape
    flat = heatmaps.reshape(count, -1).argmax(axis=1)
    ys, xs = np.divmod(flat, width)
    points = np.stack([xs, ys], axis=1).astype(np.float64)
    for k in range(count):
        x, y, heatmap = xs[k], ys[k], heatmaps[k]
        if 0 < x < width - 1:
            points[k, 0] += 0.25 * np.sign(heatmap[y, x + 1] - heatmap[y, x - 1])
        if 0 < y < height - 1:
            points[k, 1] += 0.25 * np.sign(heatmap[y + 1, x] - heatmap[y - 1, x])
    return points + 0.5  # heatmap cell centres
