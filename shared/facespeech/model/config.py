"""The shape-defining numbers of the model: stored in every checkpoint, never re-derived."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

# How a motion regressor pools its K audio codes (model.audio.POOLINGS has one module each).
MotionPooling = Literal["attention", "temporal"]


@dataclass(frozen=True)
class ModelConfig:
    image_size: int = 128  # output crop side, pixels
    render_size: int = 32  # side of the volume-rendered feature image
    n_mels: int = 80
    audio_window: int = 16  # mel frames per video frame window (W)
    audio_neighbours: int = 8  # K neighbouring windows smoothed by attention (AD-NeRF)
    audio_dim: int = 32  # A: audio code size
    expression_dim: int = 0  # 0 = no expression code input
    # Mouth-motion code the field is driven by (mouth opening + the tracker's expression
    # code); 0 = the field listens to the audio code directly. With it, audio -> motion is a
    # small regressor trained on its own, and the renderer learns motion -> image from the
    # tracked codes (GeneFace's split): neither can memorise frames through the audio.
    motion_dim: int = 0
    # Where the motion code's shape components (after the opening) come from: "lips"
    # (expressions.json "lips", the lip contour without its opening) or "expression" (the
    # whole-face code; checkpoints from before the lip code have no field and mean this).
    motion_shape: str = "expression"
    # Motion codes standardised per joined take (train.data.motion_codes), not over the whole
    # clip: checkpoints from before have one scale for all takes.
    motion_per_take: bool = False
    motion_dropout: float = 0.3  # on the audio code before the motion regressor
    # Audio -> motion regressors averaged: each fitted on its own seed, their mean varies
    # less from one training run to the next than one regressor does. Checkpoints from
    # before have one.
    motion_regressors: int = 1
    # How a regressor pools its K audio codes (model.audio.POOLINGS): "attention" by content
    # (AD-NeRF; checkpoints from before), "temporal" by their order in time as well.
    motion_pooling: MotionPooling = "attention"
    # Gaussian over time (sigma in video frames) on the predicted motion codes of a sequence
    # (render and evaluation: TalkingHead.motion_sequence); 0 = none, as checkpoints from before.
    motion_smoothing: float = 0.0
    # Grey out the reference crop's mouth box before the model sees it: the mouth then has to
    # come from the driver, not from copying the reference frame's (usually closed) lips.
    mask_reference_mouth: bool = False
    # What mask_reference_mouth hides: the lips' box, or the whole lower face (nostrils to
    # chin, jaw line to jaw line; train.data.lower_face_boxes). A lower-face model can be
    # drawn over the very frame it renders (TrainConfig.reference_frames "self"): the eyes,
    # brows and skin above the nose are the frame's own, the lower face comes from the driver.
    mask_region: str = "mouth"
    # Joined takes the field tells apart: a one-hot of the frame's take joins its condition,
    # so each take's light and colour has its own place and none leaks into another's frames
    # (NeRF-W's appearance codes). Renders draw the last (main) take. 1: no take input, as
    # checkpoints from before.
    takes: int = 1
    plane_channels: int = 16  # C per tri-plane
    plane_resolution: int = 64  # R
    hidden: int = 64  # width of the field MLPs
    feature_dim: int = 16  # F: rendered feature channels
    samples_per_ray: int = 16
    position_freqs: int = 4  # sin/cos bands of the deformation MLP's position encoding
    max_offset: float = 0.1  # largest audio-driven point offset, in head units
    upsampler_channels: int = 64  # width at render_size, halved per x2 stage (min 16)
    # U-Net skips: the upsampler sees the reference's encoded features at every scale
    # (model.upsampler.ReferenceEncoder); checkpoints from before have none.
    reference_skips: bool = False
    # Resample the reference crop into the target's head pose before the upsampler sees it:
    # each pixel's surface point (the field's depth) is projected into the reference's view
    # (model.camera.reference_flow). Needs the reference's pose; checkpoints from before have
    # none and do not warp.
    warp_reference: bool = False
    # Camera: head of radius ~1 at this distance; near/far bound the samples around it.
    camera_distance: float = 4.0
    head_radius: float = 1.0

    @property
    def driver_dim(self) -> int:
        """Size of what drives the mouth in the field: the motion code or the audio code."""
        return self.motion_dim or self.audio_dim

    @property
    def take_dim(self) -> int:
        """Size of the take one-hot in the field's condition (0 for one take)."""
        return self.takes if self.takes > 1 else 0

    @property
    def draws_over_target(self) -> bool:
        """Whether the model's reference is the frame it redraws (its lower face hidden), as
        in renders; otherwise another frame near in pose stands in for it."""
        return self.mask_reference_mouth and self.mask_region == "lower_face"

    def __post_init__(self) -> None:
        ratio = self.image_size // self.render_size
        if self.image_size % self.render_size or ratio & (ratio - 1):
            raise ValueError(
                f"image_size {self.image_size} must be render_size {self.render_size} "
                "times a power of two"
            )
        if self.mask_region not in ("mouth", "lower_face"):
            raise ValueError(f"mask_region {self.mask_region!r}: mouth or lower_face")
