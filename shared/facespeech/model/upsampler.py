"""Pixel-shuffle conv upsampler: render_size feature image -> image_size RGB + blend mask."""

from __future__ import annotations

import torch
from torch import nn


class Upsampler(nn.Module):
    """(B, F, r, r) features + (B, 3, H, W) reference -> (B, 3, H, W) RGB logit residual.

    H = r * 2^stages. The last block sees the reference at full resolution, so the output is a
    change to the reference: near zero where the frame is like the reference, large at the
    mouth. (A learned blend gate between generated RGB and the reference was tried first: its
    sigmoid saturated at "copy the reference" within a hundred steps and never recovered.)
    """

    def __init__(self, in_channels: int, width: int, stages: int) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(in_channels, width, 3, padding=1), nn.LeakyReLU(0.2))
        blocks: list[nn.Module] = []
        for _ in range(stages):
            out = max(width // 2, 16)
            blocks += [
                nn.Conv2d(width, out * 4, 3, padding=1), nn.PixelShuffle(2), nn.LeakyReLU(0.2),
                nn.Conv2d(out, out, 3, padding=1), nn.LeakyReLU(0.2),
            ]
            width = out
        self.blocks = nn.Sequential(*blocks)
        self.to_output = nn.Sequential(
            nn.Conv2d(width + 3, width, 3, padding=1), nn.LeakyReLU(0.2),
            nn.Conv2d(width, 3, 3, padding=1),
        )

    def forward(self, features: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
        hidden = self.blocks(self.stem(features))  # (B, width, H, W)
        return self.to_output(torch.cat([hidden, reference], dim=1))
