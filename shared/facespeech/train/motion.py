"""Fit the audio -> mouth-motion regressors of a motion-driven TalkingHead.

The renderer learns motion -> image from the tracked codes; this small regressor learns audio
-> motion on its own afterwards. A minute of video is a few thousand frames, so it is trained
the way small speech models are: augmented audio (gain, spectral tilt, noise, a masked band),
dropout, weight decay, and early stopping on one second in ten of the training frames, which
it never fits. The held-out tail of the clip stays untouched for evaluation. A model may
carry several regressors (ModelConfig.motion_regressors): each is fitted this way from its own
seed, and they predict together as their mean, which varies less from one run to the next.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass

import torch

from facespeech.hooks import Progress, ProgressFn, no_progress
from facespeech.model import TalkingHead
from facespeech.model.audio import MotionRegressor
from facespeech.quality.metrics import mouth_opening_correlation
from facespeech.train.config import TrainConfig
from facespeech.train.data import ClipTensors, draw_rows, neighbour_windows

MOUTH_WEIGHT = 4.0  # the mouth-opening component matters most to what a viewer sees
VALIDATE_EVERY = 50
BLOCK_FRAMES = 25  # validation takes whole blocks of this many frames, one in ten
# Shorter clips take shorter blocks, down to MIN_BLOCK_FRAMES (about twice the audio context a
# frame's prediction hears), so that validation holds MIN_VALIDATION_BLOCKS spread-out blocks:
# one 25-frame block of 14 s is one sentence, too few frames to read a correlation from.
MIN_BLOCK_FRAMES = 12
MIN_VALIDATION_BLOCKS = 4


@dataclass
class _MotionData:
    """The clip's rows, audio and tracked codes on the device, as every regressor fits them."""

    fit_rows: torch.Tensor
    val_rows: torch.Tensor
    take_weights: torch.Tensor | None
    targets: torch.Tensor
    frame_of: torch.Tensor  # row -> video frame index (0-based) of its audio window
    windows: torch.Tensor
    weights: torch.Tensor  # per code component in the loss
    next_row: torch.Tensor  # row -> fitted row of the next video frame, -1 where none
    neighbours: int
    warp: float  # TrainConfig.motion_warp
    velocity: float  # TrainConfig.motion_velocity

    @classmethod
    def of(cls, clip: ClipTensors, config: TrainConfig, neighbours: int,
           device: torch.device) -> _MotionData:
        fit_list, val_list = _split(clip, config.main_take_share is not None)
        targets = clip.motion.to(device)
        weights = torch.ones(targets.shape[1], device=device)
        weights[0] = MOUTH_WEIGHT
        frames = [pose.frame for pose in clip.track.poses]
        return cls(
            fit_rows=torch.tensor(fit_list, device=device),
            val_rows=torch.tensor(val_list, device=device),
            take_weights=clip.take_weights(fit_list, config.main_take_share),
            targets=targets,
            frame_of=torch.tensor([frame - 1 for frame in frames], device=device),
            windows=clip.windows.to(device), weights=weights,
            next_row=torch.tensor(_next_rows(frames, fit_list, clip.track.segment_starts),
                                  device=device),
            neighbours=neighbours, warp=config.motion_warp, velocity=config.motion_velocity,
        )

    def audio(self, rows: torch.Tensor, augment: bool = False) -> torch.Tensor:
        audio = self.audio_of_frames(self.frame_of[rows])
        return augment_audio(audio, self.warp) if augment else audio

    def audio_of_frames(self, frames: torch.Tensor) -> torch.Tensor:
        return neighbour_windows(self.windows, frames, self.neighbours)

    def loss(self, predicted: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
        return (self.weights * (predicted - self.targets[rows]) ** 2).mean()

    def training_loss(self, regressor: MotionRegressor, rows: torch.Tensor) -> torch.Tensor:
        """The per-frame loss on augmented audio, plus (motion_velocity) the loss on the change
        to the next frame where that frame is fitted too. Both frames of a pair hear one
        augmentation, so their difference is the voice's, not the augmentation's."""
        if not self.velocity:
            return self.loss(regressor(self.audio(rows, augment=True)), rows)
        nexts = self.next_row[rows]
        paired = nexts >= 0
        nexts = torch.where(paired, nexts, rows)
        k = self.neighbours
        audio = augment_audio(torch.cat([self.audio_of_frames(self.frame_of[rows]),
                                         self.audio_of_frames(self.frame_of[nexts])], dim=1),
                              self.warp)
        now, after = regressor(audio[:, :k]), regressor(audio[:, k:])
        change = (after - now) - (self.targets[nexts] - self.targets[rows])
        velocity = (self.weights * change ** 2)[paired].mean() if paired.any() else 0.0
        return self.loss(now, rows) + self.velocity * velocity


def fit_motion(
    model: TalkingHead, clip: ClipTensors, config: TrainConfig, device: torch.device,
    on_progress: ProgressFn = no_progress,
) -> dict[str, float]:
    """Fit each of the model's audio -> motion regressors in place, from its own seed, keeping
    the weights of its best validation step; then calibrate the amplitude of their mean.
    Returns the mean's validation loss and mouth-opening correlation (before calibration)."""
    assert model.config.motion_dim, "the model has no motion code"
    data = _MotionData.of(clip, config, model.config.audio_neighbours, device)
    was_training = model.training
    count = len(model.regressors)
    for index, regressor in enumerate(model.regressors):
        torch.manual_seed(config.seed + index)
        best_loss = _fit_regressor(regressor, data, config,
                                   lambda step, text, i=index: on_progress(Progress(
                                       "motion", (i + step / config.motion_steps) / count,
                                       f"audio->motion {i + 1}/{count} {text}")))
        print(f"audio->motion regressor {index + 1}/{count}: best validation loss {best_loss:.4f}")
    model.eval()
    with torch.no_grad():
        # as a render predicts them: the whole clip in time order, smoothed over time
        every_frame = torch.arange(len(data.windows), device=device)
        predicted = model.motion_sequence(data.audio_of_frames, every_frame)[
            data.frame_of[data.val_rows]]
        loss = float(data.loss(predicted, data.val_rows))
        corr = mouth_opening_correlation(predicted[:, 0].float().cpu().numpy(),
                                         data.targets[data.val_rows, 0].float().cpu().numpy())
        components = {"off": 0, "opening": 1, "all": data.targets.shape[1]}[
            config.motion_calibrate]
        gain = calibrate_amplitude(model, predicted, data.targets[data.val_rows], components)
    model.train(was_training)
    print(f"audio->motion: mean of {count}: validation loss {loss:.4f}, "
          f"mouth-opening correlation {corr:.3f} on {len(data.val_rows)} frames, "
          f"opening gain {float(gain[0]):.2f}")
    return {"motion_val_loss": loss, "motion_val_mouth_corr": corr,
            "motion_gain_opening": float(gain[0]),
            "motion_centre_opening": float(predicted[:, 0].mean())}


def _fit_regressor(regressor: MotionRegressor, data: _MotionData, config: TrainConfig,
                   report: Callable[[int, str], None]) -> float:
    """Train one regressor in place and restore its best validation step's weights; returns
    that step's validation loss. report(step, what to show) at each validation."""
    optimizer = torch.optim.AdamW(regressor.parameters(), lr=config.motion_lr,
                                  weight_decay=1e-2)
    best_loss, best_state = float("inf"), copy.deepcopy(regressor.state_dict())
    for step in range(1, config.motion_steps + 1):
        regressor.train()
        batch = data.fit_rows[draw_rows(len(data.fit_rows), config.motion_batch,
                                        data.take_weights).to(data.fit_rows.device)]
        loss = data.training_loss(regressor, batch)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if step % VALIDATE_EVERY and step != config.motion_steps:
            continue
        regressor.eval()
        with torch.no_grad():
            val_loss = float(data.loss(regressor(data.audio(data.val_rows)), data.val_rows))
        if val_loss < best_loss:
            best_loss, best_state = val_loss, copy.deepcopy(regressor.state_dict())
        report(step, f"step {step}/{config.motion_steps} val {val_loss:.3f} best {best_loss:.3f}")
    regressor.load_state_dict(best_state)
    return best_loss


def calibrate_amplitude(model: TalkingHead, predicted: torch.Tensor, targets: torch.Tensor,
                        components: int | None = None, max_gain: float = 3.0) -> torch.Tensor:
    """Scale each predicted component about its mean so that its spread on frames the
    regressor never fitted matches the tracked codes'; folded into the last layer's weights.

    A regressor trained for the mean squared error predicts the conditional mean: on unheard
    audio its mouth opens and closes with the right timing but about half as far, and a
    renderer that learnt from tracked codes then barely moves the lips. Gains stay within
    [1, max_gain]: the calibration never shrinks a prediction further. Only the first
    `components` (default: all) are calibrated; the others keep gain 1. Returns the gains.
    """
    if len(predicted) < 2:  # no spread to match on one frame
        return torch.ones(predicted.shape[1])
    spread = predicted.std(dim=0).clamp_min(1e-6)
    gain = (targets.std(dim=0) / spread).clamp(1.0, max_gain)
    if components is not None:
        gain[components:] = 1.0
    centre = predicted.mean(dim=0)
    # the same affine map on every regressor's output is that map on their mean
    for regressor in model.regressors:
        linear = regressor.head[-1]
        assert isinstance(linear, torch.nn.Linear)
        g, c = gain.to(linear.weight), centre.to(linear.weight)
        with torch.no_grad():
            linear.weight.mul_(g[:, None])
            linear.bias.copy_(g * linear.bias + (1.0 - g) * c)
    return gain.cpu()


def augment_audio(audio: torch.Tensor, warp: float = 0.0) -> torch.Tensor:
    """audio (B, K, W, M) normalised log-mel: another microphone, room, voice level and voice.

    Per example: the mel axis stretched by a factor within 1 +- warp (another vocal tract
    length), a gain (an offset in log-mel), a linear spectral tilt, a little noise and one
    masked band of up to 8 mels (SpecAugment), so the regressor listens to the shape of the
    spectrum over time, not to one recording's colour."""
    batch, mels = audio.shape[0], audio.shape[-1]
    device, dtype = audio.device, audio.dtype
    if warp > 0:
        audio = stretch_mels(audio, 1.0 + warp * (2 * torch.rand(batch, device=device) - 1))
    gain = torch.randn(batch, 1, 1, 1, device=device, dtype=dtype) * 0.3
    ramp = torch.linspace(-1.0, 1.0, mels, device=device, dtype=dtype)
    tilt = torch.randn(batch, 1, 1, 1, device=device, dtype=dtype) * 0.2 * ramp
    noisy = audio + gain + tilt + 0.1 * torch.randn_like(audio)
    start = torch.randint(0, mels, (batch, 1), device=device)
    width = torch.randint(0, 9, (batch, 1), device=device)
    band = torch.arange(mels, device=device)[None, :]
    masked = ((band >= start) & (band < start + width)).to(dtype)[:, None, None, :]
    return noisy * (1.0 - masked)


def stretch_mels(audio: torch.Tensor, factors: torch.Tensor) -> torch.Tensor:
    """audio (B, ..., M): example b's mel bin m takes the value at bin m / factors[b]
    (linearly interpolated, the top bin held), so a factor above 1 moves formants up."""
    mels = audio.shape[-1]
    source = (torch.arange(mels, device=audio.device, dtype=audio.dtype)[None, :]
              / factors[:, None].to(audio.dtype)).clamp(0, mels - 1)  # (B, M)
    low = source.floor().long().clamp(max=mels - 2)
    frac = (source - low).view(len(audio), *[1] * (audio.dim() - 2), mels)
    index = low.view_as(frac).expand_as(audio)
    below, above = audio.gather(-1, index), audio.gather(-1, index + 1)
    return below + frac * (above - below)


def _next_rows(frames: list[int], fit_rows: list[int],
               segment_starts: list[int] | None = None) -> list[int]:
    """For each row, the fitted row whose video frame follows its frame in the same take, or
    -1: the first frame of a joined take does not follow the last frame of the one before."""
    row_of_frame = {frames[row]: row for row in fit_rows}
    starts = set(segment_starts or [])
    return [-1 if frame + 1 in starts else row_of_frame.get(frame + 1, -1) for frame in frames]


def block_frames(rows: int) -> int:
    """Frames per validation block for a clip of `rows` training frames."""
    return max(MIN_BLOCK_FRAMES, min(BLOCK_FRAMES, rows // (10 * MIN_VALIDATION_BLOCKS)))


def _split(clip: ClipTensors, validate_on_main: bool = False) -> tuple[list[int], list[int]]:
    """Training rows in time order cut into blocks (block_frames): every tenth block (from
    the fifth) validates, the rest fit. Whole blocks keep neighbouring frames, which share
    audio windows, on one side; spreading them keeps both sides alike (a single tail block
    can be a pause). A clip too short for that is fitted and validated on all its frames.
    validate_on_main: of a joined dataset, validate on the main take's blocks only (the
    voice and room that renders are judged against)."""
    rows = sorted(clip.train_rows, key=lambda row: clip.track.poses[row].frame)
    block = block_frames(len(rows))
    val = [row for i, row in enumerate(rows) if (i // block) % 10 == 5]
    fit = [row for i, row in enumerate(rows) if (i // block) % 10 != 5]
    main_val = set(clip.main_take_rows(val)) if validate_on_main else set()
    if main_val:
        fit += [row for row in val if row not in main_val]
        val = [row for row in val if row in main_val]
    return (fit, val) if val else (rows, rows)
