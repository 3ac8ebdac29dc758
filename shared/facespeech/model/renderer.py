"""Stratified samples along rays and alpha compositing (NeRF quadrature)."""

from __future__ import annotations

import torch


def sample_depths(
    n_rays: int, batch: int, samples: int, near: float, far: float, jitter: bool,
    device: torch.device,
) -> torch.Tensor:
    """Depths (B, n_rays, S): one sample per equal bin, jittered inside it when training."""
    bins = torch.arange(samples, device=device, dtype=torch.float32)
    offsets = torch.rand(batch, n_rays, samples, device=device) if jitter else 0.5
    return near + (far - near) * (bins + offsets) / samples


def volume_render(
    density: torch.Tensor, features: torch.Tensor, depths: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """density (B, P, S), features (B, P, S, F), depths (B, P, S) -> features (B, P, F),
    alpha (B, P), depth (B, P): the weighted sum of sample depths (not divided by alpha)."""
    deltas = depths[..., 1:] - depths[..., :-1]
    deltas = torch.cat([deltas, deltas[..., -1:]], dim=-1)
    alpha = 1.0 - torch.exp(-density * deltas)
    # transmittance before each sample: prod of (1 - alpha) over the earlier ones
    transmittance = torch.cumprod(
        torch.cat([torch.ones_like(alpha[..., :1]), 1.0 - alpha + 1e-7], dim=-1), dim=-1
    )[..., :-1]
    weights = alpha * transmittance  # (B, P, S)
    return ((weights.unsqueeze(-1) * features).sum(dim=-2), weights.sum(dim=-1),
            (weights * depths).sum(dim=-1))
