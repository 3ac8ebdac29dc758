"""Training configuration as data: one pydantic model, presets are instances of it."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from facespeech.model import ModelConfig
from facespeech.model.config import MotionPooling


class TrainConfig(BaseModel):
    """Everything a training run needs besides its data; stored in config.json and checkpoints."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    # model shape (taken from the checkpoint on resume)
    image_size: int = Field(128, ge=32, le=1024)
    render_size: int = Field(32, ge=8, le=256)
    audio_dim: int = Field(32, ge=4, le=512)
    # Video frames of audio windows a frame's audio code (or motion code) hears, around it
    # (ModelConfig.audio_neighbours; 8 frames = 0.32 s, plus a window of 0.16 s).
    audio_neighbours: int = Field(8, ge=1, le=64)
    use_expression: bool = False
    # Drive the mouth through a motion code (model.config.ModelConfig.motion_dim): the
    # renderer trains on tracked codes, an audio regressor is fitted to them afterwards.
    use_motion: bool = False
    # Expression-code components in the motion code besides mouth opening: the first few
    # principal components are the jaw and lips; the later ones are small and barely audible.
    motion_codes: int = Field(6, ge=0, le=64)
    # Those components' source: the whole-face expression code, or the lip contour's shape
    # without its opening ("lips"; falls back to "expression" for a dataset preprocessed
    # before lip codes existed). Measured on obama (docs/QUALITY.md, session 5) the renderer
    # follows the expression code better (LMD 2.98 vs 3.26 px with tracked codes), so it is
    # the default.
    motion_shape: Literal["lips", "expression"] = "expression"
    # See ModelConfig.motion_per_take. Off: it cost the lower-face mode 5 dB on obama's
    # held-out frames and left `fast` where it was (docs/QUALITY.md, session 12).
    motion_per_take: bool = False
    # Give the field the frame's take (ModelConfig.takes) when the dataset joins several;
    # part of LOWER_FACE_MODE (docs/QUALITY.md, session 13).
    take_input: bool = False
    mask_reference_mouth: bool = False  # see ModelConfig.mask_reference_mouth
    mask_region: Literal["mouth", "lower_face"] = "mouth"  # see ModelConfig.mask_region
    plane_channels: int = Field(16, ge=2, le=128)
    plane_resolution: int = Field(64, ge=8, le=1024)
    hidden: int = Field(64, ge=8, le=512)
    feature_dim: int = Field(16, ge=3, le=128)
    samples_per_ray: int = Field(16, ge=2, le=256)
    upsampler_channels: int = Field(32, ge=16, le=512)
    reference_skips: bool = False  # see ModelConfig.reference_skips
    warp_reference: bool = False  # see ModelConfig.warp_reference
    # L1 between the warped reference and the target on the face outside the mouth: teaches
    # the field's depth directly where the two frames should agree (monodepth's reprojection
    # loss); only with warp_reference.
    warp_weight: float = Field(0.0, ge=0, le=100)

    # optimisation
    steps: int = Field(600, ge=1, le=1_000_000)
    batch_size: int = Field(4, ge=1, le=256)  # frames per step per GPU
    lr: float = Field(2e-3, gt=0, le=1.0)
    plane_lr: float = Field(1e-2, gt=0, le=1.0)  # planes are a lookup table: they take a larger lr
    final_lr_fraction: float = Field(0.1, gt=0, le=1.0)  # cosine decay down to lr * this
    # Exponential moving average of the renderer's weights, decay per step (0: off; 0.999
    # averages about the last 1,000 steps). Kept beside the trained weights and scored beside
    # them during training; the averaged weights are the ones saved and rendered with, as
    # StyleGAN keeps G_ema: the planes' large learning rate leaves step-to-step noise in them.
    # Off in the presets: on obama at 10,000 steps the head was level and paste-back 0.08-0.17
    # dB lower, for 5 % more per step (docs/QUALITY.md, session 25); the cosine decay already
    # quiets the end of training.
    ema_decay: float = Field(0.0, ge=0, lt=1.0)
    face_weight: float = Field(2.0, ge=0, le=100)
    mouth_weight: float = Field(8.0, ge=0, le=100)
    # Weight of pixels outside the (grown) face mask. Rendering pastes the head back onto a
    # real frame there, so a small weight lets the model spend itself on the face (0.05 in
    # `fast`); 1.0 is the plain full-frame loss.
    background_weight: float = Field(1.0, ge=0, le=100)
    face_grow: float = Field(0.03, ge=0, le=0.25)  # face mask growth, as render's `grow`
    ssim_weight: float = Field(0.0, ge=0, le=100)  # (1 - SSIM) on the face: sharper edges
    # Reference crop per target frame: any training frame, or one of the training frames
    # nearest in head pose (never within `reference_min_gap` frames of the target, so its
    # mouth is another mouth and the audio has to drive it), or the target frame itself with
    # its lower face hidden (needs mask_reference_mouth with mask_region "lower_face"): the
    # model learns to redraw the lower face of the frame it is drawn over, as renders use it.
    reference_frames: Literal["random", "near_pose", "self"] = "random"
    # Switch to drawing over the target (LOWER_FACE_MODE) when the person has at least this
    # many seconds of training video (0: always; None: never). `fast` and `quality` switch
    # from 20 s: on obama's 29 s and 90 s the held-out face gains 4.6 dB, on May's 11 s it
    # loses 0.8 dB paste-back and lip sync (docs/QUALITY.md, sessions 11 and 13).
    lower_face_min_seconds: float | None = Field(None, ge=0)
    reference_candidates: int = Field(8, ge=1, le=1000)
    reference_min_gap: int = Field(12, ge=0)
    # A dataset joined from several takes of the person: the share of each batch (renderer
    # and audio -> motion alike) drawn from the main take, the one renders walk over and the
    # held-out frames come from; None draws every training frame alike. `fast` and `quality`
    # take 0.75 (docs/QUALITY.md, session 9: the best picture of 0.5 / 0.75, and the audio ->
    # motion fit's error falls from 0.5 to 0.75 and no further at 1.0).
    main_take_share: float | None = Field(None, ge=0.05, le=1.0)
    # Noise added to the tracked motion code while the renderer trains on it (in standard
    # deviations), so the regressor's small errors at render time stay in distribution.
    motion_noise: float = Field(0.15, ge=0, le=2.0)
    # Audio -> motion regressors fitted (each from its own seed) and averaged: the mean of
    # several is steadier from run to run than one (docs/QUALITY.md, session 10).
    motion_regressors: int = Field(1, ge=1, le=16)
    # How each regressor pools its audio context (ModelConfig.motion_pooling).
    motion_pooling: MotionPooling = "attention"
    # Gaussian over time (sigma, video frames) on the predicted motion of a rendered sequence
    # (ModelConfig.motion_smoothing); the calibration is worked out after it. `fast` and
    # `quality` take 2 (docs/QUALITY.md, session 10: the held-out opening correlation of every
    # one of 12 fitted regressors rose with it, on obama and on May).
    motion_smoothing: float = Field(0.0, ge=0, le=10)
    motion_steps: int = Field(3000, ge=0, le=100_000)  # updates of each regressor
    motion_batch: int = Field(64, ge=1, le=4096)
    motion_lr: float = Field(1e-3, gt=0, le=1.0)
    # Largest stretch of the mel axis in the regressor's audio augmentation (0.1: by a factor
    # within 0.9..1.1), as vocal tracts of other lengths shift formants (VTLP): the person's
    # own voice then stands for other voices too.
    motion_warp: float = Field(0.0, ge=0, le=0.3)
    # Weight of a loss on the change of the code from one frame to the next (predicted against
    # tracked), beside the per-frame error: a per-frame MSE is content to predict a mouth that
    # drifts towards the mean, where a viewer judges lip sync by when the mouth moves.
    # Off in the presets: on obama it moved neither the held-out opening nor LMD beyond the
    # seeds' spread, and end to end it did worse (docs/QUALITY.md, session 18).
    motion_velocity: float = Field(0.0, ge=0, le=10.0)
    # Rescale the regressor's output so its spread on unfitted frames matches the tracked
    # codes' (train.motion.calibrate_amplitude): MSE regression halves the mouth's motion.
    # "opening": the mouth opening only (lip sync up, the lips' shape left conservative);
    # "all": every component; "off": the plain regression.
    motion_calibrate: Literal["off", "opening", "all"] = "opening"
    ray_jitter: bool = True  # stratified jitter of ray samples; off only for exact replays
    seed: int = Field(0, ge=0)

    # schedule
    log_every: int = Field(25, ge=1)
    eval_every: int = Field(0, ge=0)  # 0: only the final evaluation
    eval_frames: int = Field(8, ge=1, le=10_000)  # held-out frames evaluated during training
    checkpoint_every: int = Field(1000, ge=1)
    keep_checkpoints: int = Field(3, ge=1, le=100)
    max_rollbacks: int = Field(3, ge=0, le=100)
    device: Literal["auto", "cpu", "cuda"] = "auto"
    person: str = ""  # which person of the dataset; empty: the first
    tensorboard: bool = True  # run_dir/tensorboard, when the tensorboard package is installed
    wandb_project: str = ""  # empty: no WandB; else log there too (needs wandb and a login)

    @model_validator(mode="after")
    def _check_shapes(self) -> TrainConfig:
        self.to_model_config()  # raises ValueError for impossible size combinations
        if self.reference_frames == "self" and not (
                self.mask_reference_mouth and self.mask_region == "lower_face"):
            raise ValueError('reference_frames "self" needs mask_reference_mouth with '
                             'mask_region "lower_face": else the model copies its target')
        return self

    def to_model_config(self, expression_dim: int = 0, lip_dim: int = 0,
                        takes: int = 1) -> ModelConfig:
        """The module shapes; expression_dim and lip_dim (the dataset's code lengths) size the
        expression input (if use_expression) and the motion code (if use_motion), takes (the
        dataset's joined videos) the take input (if take_input)."""
        shape = self.motion_shape if lip_dim else "expression"
        shape_dim = lip_dim if shape == "lips" else expression_dim
        return ModelConfig(
            expression_dim=expression_dim if self.use_expression else 0,
            motion_dim=1 + min(self.motion_codes, shape_dim) if self.use_motion else 0,
            motion_shape=shape, motion_per_take=self.motion_per_take,
            takes=takes if self.take_input else 1,
            motion_regressors=self.motion_regressors, motion_pooling=self.motion_pooling,
            motion_smoothing=self.motion_smoothing,
            mask_reference_mouth=self.mask_reference_mouth, mask_region=self.mask_region,
            image_size=self.image_size, render_size=self.render_size, audio_dim=self.audio_dim,
            audio_neighbours=self.audio_neighbours,
            plane_channels=self.plane_channels, plane_resolution=self.plane_resolution,
            hidden=self.hidden, feature_dim=self.feature_dim,
            samples_per_ray=self.samples_per_ray, upsampler_channels=self.upsampler_channels,
            reference_skips=self.reference_skips, warp_reference=self.warp_reference,
        )

    def for_video(self, seconds: float) -> TrainConfig:
        """The config a run on `seconds` of training video trains with: in LOWER_FACE_MODE
        from lower_face_min_seconds on, else this one."""
        if self.lower_face_min_seconds is None or seconds < self.lower_face_min_seconds:
            return self
        return self.model_validate({**self.model_dump(), **LOWER_FACE_MODE})

    @classmethod
    def from_preset(cls, name: str, overrides: dict[str, Any] | None = None) -> TrainConfig:
        """A preset with some fields replaced; ValueError / ValidationError say what is wrong."""
        if name not in PRESETS:
            raise ValueError(f"unknown preset {name!r}; choose one of {sorted(PRESETS)}")
        return cls.model_validate({**PRESETS[name].model_dump(), **(overrides or {})})


SHAPE_FIELDS = (
    "image_size", "render_size", "audio_dim", "audio_neighbours", "use_expression", "use_motion",
    "motion_codes", "motion_shape", "motion_per_take", "take_input", "motion_regressors",
    "motion_pooling", "mask_reference_mouth", "mask_region",
    "plane_channels", "plane_resolution", "hidden", "feature_dim", "samples_per_ray",
    "upsampler_channels", "reference_skips", "warp_reference",
)

# Fields that set how a run trains beyond the module shapes: a resumed run keeps its own.
MODE_FIELDS = ("reference_frames", "warp_weight")

# Drawn over the very frame it redraws, that frame's lower face hidden (ModelConfig.mask_region):
# the upper face is the frame's own, so nothing needs warping, and the U-Net skips carry its
# texture to the edges of the hidden box (docs/QUALITY.md, session 11). The field is told
# the frame's take: without it, a model of several joined takes paints the other takes'
# lighting over the lower face wherever the motion code is typical of them (session 13).
LOWER_FACE_MODE: dict[str, Any] = {
    "reference_frames": "self", "mask_reference_mouth": True, "mask_region": "lower_face",
    "warp_reference": False, "warp_weight": 0.0, "reference_skips": True, "take_input": True,
}

# Training video from which `fast` and `quality` draw over the target (lower_face_min_seconds).
LOWER_FACE_MIN_SECONDS = 20.0

# One GPU, minutes: 512^2 output from a 64^2 render. 10,000 steps: 9 minutes alone on an H100;
# on obama's 29 s its held-out face is 0.4-1.1 dB better than after the 5,000 of every earlier
# `fast` figure (docs/QUALITY.md, session 19).
FAST = TrainConfig(
    image_size=512, render_size=64, audio_dim=64, plane_channels=32, plane_resolution=256,
    hidden=128, feature_dim=32, samples_per_ray=32, upsampler_channels=128,
    steps=10_000, batch_size=8, lr=1e-3, plane_lr=1e-2, eval_every=2000,
    checkpoint_every=1000, device="auto", background_weight=0.05, mouth_weight=4.0,
    ssim_weight=0.1, reference_frames="near_pose", use_motion=True, warp_reference=True,
    warp_weight=1.0, main_take_share=0.75, motion_regressors=5,
    motion_smoothing=2.0, lower_face_min_seconds=LOWER_FACE_MIN_SECONDS,
)

PRESETS: dict[str, TrainConfig] = {
    # CPU demo: a few minutes on 2 cores for a ~12 s clip at 128^2 (see docs/PERFORMANCE.md).
    "tiny": TrainConfig(),
    "fast": FAST,
    # One GPU, twice as long: fast's recipe for 20,000 steps (16 minutes on an H100). On obama's
    # 29 s it scores 0.1 dB *below* fast on the held-out tail (docs/QUALITY.md, session 23): the
    # extra steps fit the training frames harder. A larger render (128^2, finer planes, more
    # samples) was worse at equal steps (session 14); more video is the measured lever.
    "quality": FAST.model_copy(update={"steps": 20_000}),
}
