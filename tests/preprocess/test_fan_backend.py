"""The face-alignment backend loads a local TorchScript FAN and reads its heatmaps."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from facespeech.preprocess.fan import INPUT_SIDE, N_POINTS, FanLandmarker, peaks


class _FixedHeatmaps(torch.nn.Module):
    """Stands in for 2D-FAN: the same 68 heatmaps whatever the input (peaks on a grid)."""

    def __init__(self) -> None:
        super().__init__()
        maps = torch.zeros(1, N_POINTS, 64, 64)
        for k in range(N_POINTS):
            maps[0, k, 10 + (k // 10) * 6, 8 + (k % 10) * 5] = 1.0
        self.register_buffer("maps", maps)

    def forward(self, image: torch.Tensor) -> list[torch.Tensor]:
        assert image.shape[1] == 3 and image.shape[2] == 256 and image.shape[3] == 256
        return [self.maps.expand(image.shape[0], -1, -1, -1) + 0 * image.mean()]


def test_loads_a_saved_torchscript_model_and_maps_points_back(tmp_path: Path) -> None:
    weights = tmp_path / "2DFAN-test.pth"
    torch.jit.script(_FixedHeatmaps()).save(str(weights))
    fan = FanLandmarker(weights)
    image = np.zeros((400, 300, 3), np.uint8)
    box = (50.0, 100.0, 200.0, 200.0)
    points = fan.landmarks(image, box)
    assert points.shape == (N_POINTS, 2)
    # Landmark k sits in heatmap cell (8 + 5 (k % 10), 10 + 6 (k // 10)); crop px = cell * 4.
    cells = np.array([(8 + (k % 10) * 5 + 0.5, 10 + (k // 10) * 6 + 0.5) for k in range(68)])
    side = 1.2 * 200 / 195 * 200
    centre = np.array([150.0, 200.0 - 0.12 * 200])
    expected = centre - side / 2 + cells * 4 * side / INPUT_SIDE
    assert np.abs(points - expected).max() < 1e-6


def test_missing_weights_say_where_to_put_them(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="cannot be downloaded"):
        FanLandmarker(tmp_path / "absent.pth")


def test_peaks_refine_towards_the_higher_neighbour() -> None:
    heatmap = np.zeros((1, 8, 8))
    heatmap[0, 3, 4], heatmap[0, 3, 5] = 1.0, 0.5
    assert np.allclose(peaks(heatmap), [[4.75, 3.5]])
