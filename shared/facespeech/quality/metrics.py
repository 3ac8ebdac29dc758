"""Image and sync metrics, as a registry (StyleGAN3 metric_main): name -> fn(pred, target, mask).

Images are float tensors (B, 3, H, W) in [0, 1]; masks (B, 1, H, W) in [0, 1] select the face
region for the masked variants. Every function returns the mean over the batch as a float.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F

MetricFn = Callable[[torch.Tensor, torch.Tensor, torch.Tensor | None], float]


def psnr(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor | None = None) -> float:
    """Peak signal-to-noise ratio in dB (peak 1.0), over the mask when one is given."""
    err = (pred.float() - target.float()) ** 2
    if mask is None:
        mse = err.mean(dim=(1, 2, 3))
    else:
        weight = mask.float().expand_as(err)
        mse = (err * weight).sum(dim=(1, 2, 3)) / weight.sum(dim=(1, 2, 3)).clamp_min(1e-8)
    return float((10.0 * torch.log10(1.0 / mse.clamp_min(1e-10))).mean())


def _gaussian_window(size: int, sigma: float, device: torch.device) -> torch.Tensor:
    x = torch.arange(size, device=device, dtype=torch.float32) - (size - 1) / 2
    g = torch.exp(-(x**2) / (2 * sigma**2))
    g = g / g.sum()
    return (g[:, None] * g[None, :]).expand(3, 1, size, size).contiguous()


def ssim_map(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Per-pixel SSIM (B, 1, H, W), Gaussian window 11 / sigma 1.5 as in Wang et al. 2004."""
    x, y = pred.float(), target.float()
    window = _gaussian_window(11, 1.5, x.device)

    def blur(t: torch.Tensor) -> torch.Tensor:
        return F.conv2d(F.pad(t, (5, 5, 5, 5), mode="reflect"), window, groups=3)

    c1, c2 = 0.01**2, 0.03**2
    mu_x, mu_y = blur(x), blur(y)
    var_x = blur(x * x) - mu_x**2
    var_y = blur(y * y) - mu_y**2
    cov = blur(x * y) - mu_x * mu_y
    num = (2 * mu_x * mu_y + c1) * (2 * cov + c2)
    den = (mu_x**2 + mu_y**2 + c1) * (var_x + var_y + c2)
    return (num / den).mean(dim=1, keepdim=True)


def ssim(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor | None = None) -> float:
    """Mean SSIM, over the mask when one is given."""
    values = ssim_map(pred, target)
    if mask is None:
        return float(values.mean())
    weight = mask.float()
    per_image = (values * weight).sum(dim=(1, 2, 3)) / weight.sum(dim=(1, 2, 3)).clamp_min(1e-8)
    return float(per_image.mean())


def mouth_opening_correlation(a: np.ndarray | list[float], b: np.ndarray | list[float]) -> float:
    """Pearson correlation of two mouth-opening sequences; 0 when either is constant."""
    x, y = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if x.shape != y.shape or x.size < 2:
        raise ValueError(f"need two equal-length sequences, got {x.shape} and {y.shape}")
    x, y = x - x.mean(), y - y.mean()
    denom = np.sqrt((x * x).sum() * (y * y).sum())
    return float((x * y).sum() / denom) if denom > 0 else 0.0


METRICS: dict[str, MetricFn] = {
    "psnr": lambda pred, target, mask: psnr(pred, target),
    "ssim": lambda pred, target, mask: ssim(pred, target),
    "psnr_face": psnr,
    "ssim_face": ssim,
}


def compute_metrics(
    pred: torch.Tensor,
    target: torch.Tensor,
    mask: torch.Tensor | None,
    names: list[str] | None = None,
) -> dict[str, float]:
    """Run the named metrics (all by default); the masked ones are skipped without a mask."""
    names = names or list(METRICS)
    return {
        name: METRICS[name](pred, target, mask)
        for name in names
        if mask is not None or not name.endswith("_face")
    }
