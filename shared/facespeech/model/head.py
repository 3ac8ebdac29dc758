"""The whole talking head: audio + eye + pose + reference crop -> RGB crop."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from facespeech.model.audio import (
    AudioEncoder,
    AudioSmoother,
    MotionRegressor,
    smooth_over_time,
    smoothed_code,
)
from facespeech.model.camera import box_masks, head_rays, pixel_grid, reference_flow
from facespeech.model.config import ModelConfig
from facespeech.model.field import TriPlaneField
from facespeech.model.renderer import sample_depths, volume_render
from facespeech.model.upsampler import Upsampler


class TalkingHead(nn.Module):
    """Volume-render an audio-driven tri-plane head at render_size, upsample it to image_size.

    The reference crop (a real frame of the person) supplies what the field does not model:
    its downsampled pixels become the background features the head is composited over, and
    the upsampler predicts a change to the reference at full resolution, so hair, torso and
    background stay sharp and the field spends itself on the face and mouth.
    """

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.config = config
        if config.motion_dim:
            # audio -> motion: the mean of motion_regressors independently fitted regressors
            self.regressors = nn.ModuleList(
                MotionRegressor(config.n_mels, config.audio_window, config.audio_neighbours,
                                config.audio_dim, config.motion_dim, config.motion_dropout,
                                config.motion_pooling)
                for _ in range(config.motion_regressors)
            )
        else:
            self.audio_encoder = AudioEncoder(config.n_mels, config.audio_window,
                                              config.audio_dim)
            self.audio_smoother = AudioSmoother(config.audio_dim, config.audio_neighbours)
        self.field = TriPlaneField(config)
        f = config.feature_dim
        self.background = nn.Sequential(
            nn.Conv2d(3, f, 3, padding=1), nn.LeakyReLU(0.2), nn.Conv2d(f, f, 3, padding=1)
        )
        stages = (config.image_size // config.render_size).bit_length() - 1
        self.upsampler = Upsampler(f, config.upsampler_channels, stages, config.reference_skips)

    def audio_code(self, audio: torch.Tensor) -> torch.Tensor:
        """audio (B, K, W, n_mels) -> (B, A)."""
        return smoothed_code(self.audio_encoder, self.audio_smoother, audio)

    def predict_motion(self, audio: torch.Tensor) -> torch.Tensor:
        """audio (B, K, W, n_mels) -> motion code (B, motion_dim), the regressors' mean."""
        assert self.config.motion_dim, "this model is driven by the audio code directly"
        return torch.stack([regressor(audio) for regressor in self.regressors]).mean(dim=0)

    def motion_sequence(self, audio_of: Callable[[torch.Tensor], torch.Tensor],
                        frames: torch.Tensor, batch: int = 512) -> torch.Tensor:
        """The predicted motion codes (T, motion_dim) of consecutive video frames `frames`
        (T,), audio_of(some frames) giving their (B, K, W, n_mels) windows; smoothed over
        time by config.motion_smoothing."""
        codes = torch.cat([self.predict_motion(audio_of(frames[start : start + batch]))
                           for start in range(0, len(frames), batch)])
        return smooth_over_time(codes, self.config.motion_smoothing)

    def load_state_dict(self, state_dict: Mapping[str, Any], strict: bool = True,
                        assign: bool = False) -> Any:
        """As nn.Module's; a motion model saved before the regressors became a list (one
        regressor under audio_encoder, audio_smoother, to_motion) loads as regressor 0."""
        if self.config.motion_dim:
            state_dict = {_renamed_regressor_key(key): value
                          for key, value in state_dict.items()}
        return super().load_state_dict(state_dict, strict, assign)

    def forward(
        self,
        audio: torch.Tensor,
        eye: torch.Tensor,
        rotation: torch.Tensor,
        offset: torch.Tensor,
        focal: torch.Tensor,
        reference: torch.Tensor,
        expression: torch.Tensor | None = None,
        motion: torch.Tensor | None = None,
        reference_mouth: torch.Tensor | None = None,
        reference_rotation: torch.Tensor | None = None,
        reference_offset: torch.Tensor | None = None,
        reference_focal: torch.Tensor | None = None,
        take: torch.Tensor | None = None,
        jitter: bool = False,
    ) -> dict[str, torch.Tensor]:
        """audio (B, K, W, n_mels), eye (B, 1), rotation (B, 3, 3), offset (B, 3), focal (B,),
        reference (B, 3, H, W) in [0, 1], expression (B, E) or None, motion (B, M) or None:
        the tracked motion code in training (teacher forcing), predicted from audio if None;
        reference_mouth (B, 4): the reference's mouth box in [0, 1], greyed out if the config
        says mask_reference_mouth; reference_rotation, reference_offset, reference_focal: the
        reference's pose, used if the config says warp_reference (without them the reference is
        taken to be in the target's pose, as when rendering over the pose frames themselves);
        take (B,): which joined take each frame is of, for a model of several (config.takes),
        the main (last) one if None.

        Returns rgb (B, 3, H, W) in [0, 1], alpha (B, 1, r, r) of the head,
        residual (B, 3, H, W), the change to the reference in logit space, and reference
        (B, 3, H, W), the reference as the output is built on it (warped or not).
        """
        cfg = self.config
        batch, r = audio.shape[0], cfg.render_size
        assert audio.shape[1:] == (cfg.audio_neighbours, cfg.audio_window, cfg.n_mels), audio.shape
        assert reference.shape[1:] == (3, cfg.image_size, cfg.image_size), reference.shape
        if cfg.motion_dim:
            driver = self.predict_motion(audio) if motion is None else motion
        else:
            driver = self.audio_code(audio)
        parts = [driver, eye]
        if cfg.expression_dim:
            assert expression is not None, "this model was trained with expression codes"
            parts.append(expression)
        if cfg.take_dim:
            if take is None:
                take = torch.full((batch,), cfg.takes - 1, device=audio.device)
            parts.append(F.one_hot(take.long(), cfg.takes).to(driver.dtype))
        condition = torch.cat(parts, dim=-1)  # (B, A + 1 + E + takes)
        if cfg.mask_reference_mouth and reference_mouth is not None:
            hidden = box_masks(reference_mouth, cfg.image_size).to(reference.dtype)
            reference = torch.lerp(reference, torch.full_like(reference, 0.5), hidden)

        origins, directions = head_rays(rotation, offset, focal, r, cfg.camera_distance)
        bound = cfg.head_radius * 1.2
        depths = sample_depths(
            r * r, batch, cfg.samples_per_ray, cfg.camera_distance - bound,
            cfg.camera_distance + bound, jitter, audio.device,
        ).to(directions.dtype)  # (B, P, S)
        points = origins.unsqueeze(2) + directions.unsqueeze(2) * depths.unsqueeze(-1)
        density, features = self.field(points.flatten(1, 2), condition)
        shape = (batch, r * r, cfg.samples_per_ray)
        head, alpha, depth = volume_render(density.view(shape), features.view(*shape, -1), depths)
        if cfg.warp_reference and reference_rotation is not None:
            assert reference_offset is not None and reference_focal is not None
            # where the head is empty the surface is taken at its centre's depth
            surface = depth + (1.0 - alpha) * (cfg.camera_distance + offset[:, 2:])
            seen_at = reference_flow(origins, directions, surface, reference_rotation,
                                     reference_offset, reference_focal, cfg.camera_distance)
            reference = warp_to_target(reference, seen_at, alpha, r)

        head = head.transpose(1, 2).reshape(batch, -1, r, r)  # (B, F, r, r)
        alpha = alpha.view(batch, 1, r, r)
        small_reference = F.interpolate(reference, size=(r, r), mode="area")
        composite = head + (1.0 - alpha) * self.background(small_reference)
        residual = self.upsampler(composite, reference)  # (B, 3, H, W)
        # residual in logit space: gradients never vanish, the output stays in (0, 1)
        rgb = torch.sigmoid(torch.logit(reference.clamp(0.01, 0.99)) + residual)
        return {"rgb": rgb, "alpha": alpha, "residual": residual, "reference": reference}


def warp_to_target(
    reference: torch.Tensor, seen_at: torch.Tensor, alpha: torch.Tensor, render_size: int
) -> torch.Tensor:
    """Resample the reference (B, 3, H, W) so that its head lands where the target's is.

    seen_at (B, r*r, 2): each render pixel's surface point in the reference crop; alpha
    (B, r*r): how much of the pixel is head. The displacement is scaled by alpha, so the
    background, which does not move with the head, stays where it is.
    """
    batch, size = reference.shape[0], reference.shape[-1]
    here = pixel_grid(render_size, batch, reference.device).flatten(1, 2)  # (B, r*r, 2)
    flow = ((seen_at.float() - here) * alpha.float().unsqueeze(-1)).view(
        batch, render_size, render_size, 2)
    flow = F.interpolate(flow.permute(0, 3, 1, 2), size=(size, size), mode="bilinear",
                         align_corners=False).permute(0, 2, 3, 1)
    grid = pixel_grid(size, batch, reference.device) + flow
    return F.grid_sample(reference, grid.to(reference.dtype), mode="bilinear",
                         padding_mode="border", align_corners=False)


_OLD_REGRESSOR_PREFIXES = {"audio_encoder.": "regressors.0.encoder.",
                           "audio_smoother.": "regressors.0.smoother.",
                           "to_motion.": "regressors.0.head."}


def is_regressor_key(key: str) -> bool:
    """Whether a state-dict key belongs to the audio -> motion regressors (in either layout)."""
    return key.startswith(("regressors.", *_OLD_REGRESSOR_PREFIXES))


def _renamed_regressor_key(key: str) -> str:
    for old, new in _OLD_REGRESSOR_PREFIXES.items():
        if key.startswith(old):
            return new + key.removeprefix(old)
    return key
