"""LPIPS (Zhang et al. 2018, "The Unreasonable Effectiveness of Deep Features as a Perceptual
Metric"), AlexNet variant v0.1, as the `lpips` package computes it.

Nothing is downloaded: the caller gives two local files, the ImageNet AlexNet weights in
torchvision's layout (`alexnet-owt-7be5be79.pth`, keys `features.N.weight`) and the LPIPS
linear heads (`lpips/weights/v0.1/alex.pth`, keys `linN.model.1.weight`).
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

# The `lpips` package's ScalingLayer: inputs in [-1, 1] shifted and scaled to ImageNet stats.
SHIFT = (-0.030, -0.088, -0.188)
SCALE = (0.458, 0.448, 0.450)
CHANNELS = (64, 192, 384, 256, 256)  # AlexNet relu1..relu5


def _alexnet_features() -> nn.Sequential:
    """torchvision's `alexnet().features` up to relu5, with the same indices (so its
    state-dict keys load as they are)."""
    return nn.Sequential(
        nn.Conv2d(3, 64, 11, stride=4, padding=2), nn.ReLU(),  # 0, 1 -> relu1
        nn.MaxPool2d(3, stride=2), nn.Conv2d(64, 192, 5, padding=2), nn.ReLU(),  # 2-4 -> relu2
        nn.MaxPool2d(3, stride=2), nn.Conv2d(192, 384, 3, padding=1), nn.ReLU(),  # 5-7 -> relu3
        nn.Conv2d(384, 256, 3, padding=1), nn.ReLU(),  # 8, 9 -> relu4
        nn.Conv2d(256, 256, 3, padding=1), nn.ReLU(),  # 10, 11 -> relu5
    )


# Where each of the five compared activations ends in the feature stack.
TAPS = (2, 5, 8, 10, 12)


class LPIPS(nn.Module):
    """Perceptual distance of two image batches (B, 3, H, W) in [0, 1] -> (B,); 0 for equal
    images, larger for perceptually more different ones (about 0.1–0.2 for a soft render)."""

    def __init__(self) -> None:
        super().__init__()
        self.features = _alexnet_features()
        self.linear = nn.ModuleList(nn.Conv2d(c, 1, 1, bias=False) for c in CHANNELS)
        self.register_buffer("shift", torch.tensor(SHIFT).view(1, 3, 1, 1))
        self.register_buffer("scale", torch.tensor(SCALE).view(1, 3, 1, 1))

    @classmethod
    def load(cls, backbone: Path, linear: Path) -> LPIPS:
        """From local files (see the module docstring); ValueError names a file that does not
        fit."""
        model = cls()
        features = {
            key.removeprefix("features."): value
            for key, value in torch.load(backbone, map_location="cpu", weights_only=True).items()
            if key.startswith("features.")
        }
        heads = {
            key.split(".")[0].removeprefix("lin") + ".weight": value
            for key, value in torch.load(linear, map_location="cpu", weights_only=True).items()
        }
        for part, weights, path in ((model.features, features, backbone),
                                    (model.linear, heads, linear)):
            try:
                part.load_state_dict(weights)
            except RuntimeError as error:
                raise ValueError(f"{path} does not hold LPIPS/AlexNet weights: {error}") from error
        return model.eval().requires_grad_(False)

    def _activations(self, images: torch.Tensor) -> list[torch.Tensor]:
        x = (images * 2 - 1 - self.shift) / self.scale
        taps, start = [], 0
        for end in TAPS:
            x = self.features[start:end](x)
            taps.append(x)
            start = end
        return taps

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        distance = torch.zeros(a.shape[0], device=a.device)
        for head, fa, fb in zip(self.linear, self._activations(a.float()),
                                self._activations(b.float()), strict=True):
            # unit-normalise each position's channel vector, as the paper does
            fa = fa / (fa.norm(dim=1, keepdim=True) + 1e-10)
            fb = fb / (fb.norm(dim=1, keepdim=True) + 1e-10)
            distance += head((fa - fb) ** 2).mean(dim=(1, 2, 3))
        return distance
