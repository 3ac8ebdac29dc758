"""Tri-plane feature field in the canonical head frame, deformed and modulated by audio + eye."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from facespeech.model.config import ModelConfig


def position_encoding(points: torch.Tensor, freqs: int) -> torch.Tensor:
    """(..., 3) -> (..., 3 + 6 * freqs): the points and their sin/cos at octave frequencies."""
    scales = 2.0 ** torch.arange(freqs, device=points.device, dtype=points.dtype) * torch.pi
    angles = (points.unsqueeze(-1) * scales).flatten(-2)
    return torch.cat([points, torch.sin(angles), torch.cos(angles)], dim=-1)


def mlp(inputs: int, hidden: int, outputs: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Linear(inputs, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU(),
        nn.Linear(hidden, outputs),
    )


class TriPlaneField(nn.Module):
    """points (B, N, 3) in [-r, r]^3 + condition (B, D) -> density (B, N), features (B, N, F).

    The condition is [driver (audio or mouth-motion code), blink, expression code]. A
    driver-dependent offset moves each point before the planes are read (the mouth opens by
    moving space, AD-NeRF/RAD-NeRF), and a per-point gate lets only some regions listen to
    the driver in the decoder (ER-NeRF's region attention, reduced to one learned scalar per
    point).
    """

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        c, r = config.plane_channels, config.plane_resolution
        self.planes = nn.Parameter(torch.randn(3, c, r, r) * 0.1)  # xy, xz, yz
        self.radius = config.head_radius * 1.2
        self.max_offset = config.max_offset
        self.freqs = config.position_freqs
        condition = config.driver_dim + 1 + config.expression_dim + config.take_dim
        self.deform = mlp(3 + 6 * self.freqs + condition, config.hidden, 3)
        nn.init.zeros_(self.deform[-1].weight)  # start undeformed
        nn.init.zeros_(self.deform[-1].bias)
        self.region = nn.Linear(3 * c, 1)
        self.driver_dim = config.driver_dim
        self.decoder = mlp(3 * c + condition, config.hidden, 1 + config.feature_dim)

    def sample_planes(self, points: torch.Tensor) -> torch.Tensor:
        """(B, N, 3) in [-1, 1] -> (B, N, 3C): bilinear reads of the three planes, concatenated."""
        batch = points.shape[0]
        coords = torch.stack([points[..., [0, 1]], points[..., [0, 2]], points[..., [1, 2]]])
        grids = coords.flatten(0, 1).unsqueeze(2)  # (3B, N, 1, 2)
        planes = self.planes.repeat_interleave(batch, dim=0)  # (3B, C, R, R)
        sampled = F.grid_sample(planes, grids, mode="bilinear", align_corners=False)
        sampled = sampled.squeeze(-1).unflatten(0, (3, batch))  # (3, B, C, N)
        return sampled.permute(1, 3, 0, 2).flatten(2)  # (B, N, 3C)

    def forward(
        self, points: torch.Tensor, condition: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        unit = points / self.radius
        cond = condition.unsqueeze(1).expand(-1, unit.shape[1], -1)  # (B, N, D)
        offset = torch.tanh(self.deform(torch.cat([position_encoding(unit, self.freqs), cond], -1)))
        plane_features = self.sample_planes(unit + offset * (self.max_offset / self.radius))
        gate = torch.sigmoid(self.region(plane_features))  # (B, N, 1)
        driver, rest = cond[..., : self.driver_dim], cond[..., self.driver_dim :]
        raw = self.decoder(torch.cat([plane_features, gate * driver, rest], dim=-1))
        # points outside the head's bounding box carry no density
        inside = (unit.abs() <= 1.0).all(dim=-1).to(raw.dtype)
        density = F.softplus(raw[..., 0] - 1.0) * inside
        return density, raw[..., 1:]
