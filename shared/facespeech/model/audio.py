"""Audio code from mel windows, smoothed over neighbouring frames (AD-NeRF AudioNet/AudioAttNet)."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


class AudioEncoder(nn.Module):
    """One mel window per video frame -> one audio code. Convolves over time, mels as channels."""

    def __init__(self, n_mels: int, window: int, audio_dim: int, width: int = 64) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        channels, length = n_mels, window
        while length > 2:  # stride-2 convs until two time steps are left: 16 -> 8 -> 4 -> 2
            layers += [nn.Conv1d(channels, width, 3, stride=2, padding=1), nn.LeakyReLU(0.02)]
            channels, length = width, (length + 1) // 2
        self.convs = nn.Sequential(*layers)
        self.head = nn.Linear(channels * length, audio_dim)

    def forward(self, mel: torch.Tensor) -> torch.Tensor:
        # mel (N, W, n_mels) -> (N, n_mels, W) -> (N, width, 2) -> (N, A)
        hidden = self.convs(mel.transpose(1, 2))
        return self.head(hidden.flatten(1))


class AudioSmoother(nn.Module):
    """Attention over the K codes around a frame, so the mouth does not jitter frame to frame."""

    def __init__(self, audio_dim: int, neighbours: int) -> None:
        super().__init__()
        self.scores = nn.Sequential(
            nn.Conv1d(audio_dim, 16, 3, padding=1), nn.LeakyReLU(0.02),
            nn.Conv1d(16, 1, 3, padding=1),
        )
        self.neighbours = neighbours

    def forward(self, codes: torch.Tensor) -> torch.Tensor:
        # codes (B, K, A) -> weights (B, K, 1) -> smoothed (B, A)
        weights = torch.softmax(self.scores(codes.transpose(1, 2)).transpose(1, 2), dim=1)
        return (weights * codes).sum(dim=1)


class TemporalPooling(nn.Module):
    """The K codes around a frame -> one code, knowing where each sits in time: two
    convolutions over the sequence (how the sound changes) and a linear map of the whole of it.
    Attention pooling (AudioSmoother) weighs codes by their content alone; the lips' shape at a
    frame depends on the sounds just before and after it in their order (coarticulation)."""

    def __init__(self, audio_dim: int, neighbours: int) -> None:
        super().__init__()
        self.convs = nn.Sequential(
            nn.Conv1d(audio_dim, audio_dim, 3, padding=1), nn.LeakyReLU(0.02),
            nn.Conv1d(audio_dim, audio_dim, 3, padding=1), nn.LeakyReLU(0.02),
        )
        self.mix = nn.Linear(audio_dim * neighbours, audio_dim)

    def forward(self, codes: torch.Tensor) -> torch.Tensor:
        # codes (B, K, A) -> (B, A, K) convolved over K -> flattened (B, A * K) -> (B, A)
        return self.mix(self.convs(codes.transpose(1, 2)).flatten(1))


POOLINGS: dict[str, type[nn.Module]] = {"attention": AudioSmoother, "temporal": TemporalPooling}


class MotionRegressor(nn.Module):
    """K mel windows around a frame -> motion code: encoder, pooling over the K windows
    (POOLINGS), dropout and a linear head. Fitted on its own after the renderer (train.motion)."""

    def __init__(self, n_mels: int, window: int, neighbours: int, audio_dim: int,
                 motion_dim: int, dropout: float, pooling: str = "attention") -> None:
        super().__init__()
        self.encoder = AudioEncoder(n_mels, window, audio_dim)
        self.smoother = POOLINGS[pooling](audio_dim, neighbours)
        self.head = nn.Sequential(nn.Dropout(dropout), nn.Linear(audio_dim, motion_dim))

    def forward(self, audio: torch.Tensor) -> torch.Tensor:
        return self.head(smoothed_code(self.encoder, self.smoother, audio))


def smoothed_code(encoder: AudioEncoder, smoother: nn.Module,
                  audio: torch.Tensor) -> torch.Tensor:
    """audio (B, K, W, n_mels): each window encoded (B, K, A), then smoothed (B, A)."""
    batch, k = audio.shape[:2]
    return smoother(encoder(audio.flatten(0, 1)).unflatten(0, (batch, k)))


def smooth_over_time(codes: torch.Tensor, sigma: float) -> torch.Tensor:
    """codes (T, C) of consecutive frames, each column blurred by a Gaussian of `sigma` frames
    (ends held: the edge frames repeat); sigma 0 returns them unchanged."""
    if sigma <= 0 or len(codes) < 2:
        return codes
    radius = math.ceil(3 * sigma)
    offsets = torch.arange(-radius, radius + 1, device=codes.device, dtype=torch.float32)
    kernel = torch.exp(-0.5 * (offsets / sigma) ** 2)
    kernel = (kernel / kernel.sum()).to(codes.dtype)
    columns = codes.T[:, None, :]  # (C, 1, T)
    padded = F.pad(columns, (radius, radius), mode="replicate")
    return F.conv1d(padded, kernel.view(1, 1, -1))[:, 0, :].T
