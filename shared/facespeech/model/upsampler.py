"""Pixel-shuffle conv upsampler: render_size feature image -> image_size RGB + blend mask."""

from __future__ import annotations

import torch
from torch import nn

_LAYERS_PER_STAGE = 5  # conv, pixel shuffle, activation | (skip joins here) | conv, activation


class ReferenceEncoder(nn.Module):
    """(B, 3, H, W) reference -> its features at H/2^stages, ..., H/4, H/2 (U-Net skips).

    Strided convolutions see a growing window of the reference, so the decoder can move its
    texture by more pixels than two 3x3 convolutions at full resolution reach: the nearest-pose
    reference is a few pixels off the target's pose.
    """

    def __init__(self, widths: list[int]) -> None:
        """widths: channels per level, coarsest first."""
        super().__init__()
        levels, channels = [], 3
        for width in reversed(widths):  # built from the finest level (H/2) down
            levels.append(nn.Sequential(
                nn.Conv2d(channels, width, 3, stride=2, padding=1), nn.LeakyReLU(0.2),
                nn.Conv2d(width, width, 3, padding=1), nn.LeakyReLU(0.2),
            ))
            channels = width
        self.levels = nn.ModuleList(levels)

    def forward(self, reference: torch.Tensor) -> list[torch.Tensor]:
        """Features, coarsest first."""
        features, x = [], reference
        for level in self.levels:
            x = level(x)
            features.append(x)
        return features[::-1]


class Upsampler(nn.Module):
    """(B, F, r, r) features + (B, 3, H, W) reference -> (B, 3, H, W) RGB logit residual.

    H = r * 2^stages. The last block sees the reference at full resolution, so the output is a
    change to the reference: near zero where the frame is like the reference, large at the
    mouth. With reference_skips every coarser scale sees the reference too (ReferenceEncoder),
    so misaligned eyes, nostrils and lips can be moved rather than blurred. (A learned blend
    gate between generated RGB and the reference was tried first: its sigmoid saturated at
    "copy the reference" within a hundred steps and never recovered.)
    """

    def __init__(
        self, in_channels: int, width: int, stages: int, reference_skips: bool = False
    ) -> None:
        super().__init__()
        widths = []  # channels after each x2 stage: halved, at least 16
        for _ in range(stages):
            widths.append(max((widths[-1] if widths else width) // 2, 16))
        # the skip at render size joins the stem, the one at r * 2^i joins stage i - 1's output
        skip_widths = [widths[0], *widths[:-1]] if reference_skips and stages else []
        self.encoder = ReferenceEncoder(skip_widths) if skip_widths else None
        stem_in = in_channels + (skip_widths[0] if skip_widths else 0)
        self.stem = nn.Sequential(nn.Conv2d(stem_in, width, 3, padding=1), nn.LeakyReLU(0.2))
        blocks: list[nn.Module] = []
        for index, out in enumerate(widths):
            skip = skip_widths[index + 1] if index + 1 < len(skip_widths) else 0
            blocks += [
                nn.Conv2d(width, out * 4, 3, padding=1), nn.PixelShuffle(2), nn.LeakyReLU(0.2),
                nn.Conv2d(out + skip, out, 3, padding=1), nn.LeakyReLU(0.2),
            ]
            width = out
        self.blocks = nn.Sequential(*blocks)
        self.to_output = nn.Sequential(
            nn.Conv2d(width + 3, width, 3, padding=1), nn.LeakyReLU(0.2),
            nn.Conv2d(width, 3, 3, padding=1),
        )

    def forward(self, features: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
        if self.encoder is None:
            hidden = self.blocks(self.stem(features))
        else:
            hidden = self._decode_with_skips(features, self.encoder(reference))
        return self.to_output(torch.cat([hidden, reference], dim=1))

    def _decode_with_skips(self, features: torch.Tensor, skips: list[torch.Tensor]) -> torch.Tensor:
        hidden = self.stem(torch.cat([features, skips[0]], dim=1))
        stages = len(self.blocks) // _LAYERS_PER_STAGE
        for index in range(stages):
            layers = self.blocks[index * _LAYERS_PER_STAGE : (index + 1) * _LAYERS_PER_STAGE]
            hidden = layers[2](layers[1](layers[0](hidden)))
            if index + 1 < len(skips):
                hidden = torch.cat([hidden, skips[index + 1]], dim=1)
            hidden = layers[4](layers[3](hidden))
        return hidden
