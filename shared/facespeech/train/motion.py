"""Fit the audio -> mouth-motion regressor of a motion-driven TalkingHead.

The renderer learns motion -> image from the tracked codes; this small regressor learns audio
-> motion on its own afterwards. A minute of video is a few thousand frames, so it is trained
the way small speech models are: augmented audio (gain, spectral tilt, noise, a masked band),
dropout, weight decay, and early stopping on one second in ten of the training frames, which
it never fits. The held-out tail of the clip stays untouched for evaluation.
"""

from __future__ import annotations

import copy

import torch

from facespeech.hooks import Progress, ProgressFn, no_progress
from facespeech.model import TalkingHead
from facespeech.quality.metrics import mouth_opening_correlation
from facespeech.train.config import TrainConfig
from facespeech.train.data import ClipTensors, draw_rows, neighbour_windows

MOUTH_WEIGHT = 4.0  # the mouth-opening component matters most to what a viewer sees
VALIDATE_EVERY = 50
BLOCK_FRAMES = 25  # validation takes whole blocks of this many frames, one in ten


def fit_motion(
    model: TalkingHead, clip: ClipTensors, config: TrainConfig, device: torch.device,
    on_progress: ProgressFn = no_progress,
) -> dict[str, float]:
    """Train model's audio encoder, smoother and to_motion head in place; keep the weights of
    the best validation step. Returns the validation loss and mouth-opening correlation."""
    assert model.to_motion is not None, "the model has no motion code"
    torch.manual_seed(config.seed)
    fit_list, val_list = _split(clip, config.main_take_share is not None)
    fit_rows, val_rows = (torch.tensor(rows, device=device) for rows in (fit_list, val_list))
    take_weights = clip.take_weights(fit_list, config.main_take_share)
    targets = clip.motion.to(device)
    frame_of = torch.tensor([pose.frame - 1 for pose in clip.track.poses], device=device)
    windows = clip.windows.to(device)
    weights = torch.ones(targets.shape[1], device=device)
    weights[0] = MOUTH_WEIGHT
    modules = [model.audio_encoder, model.audio_smoother, model.to_motion]
    parameters = [p for module in modules for p in module.parameters()]
    optimizer = torch.optim.AdamW(parameters, lr=config.motion_lr, weight_decay=1e-2)
    neighbours = model.config.audio_neighbours

    def loss_of(rows: torch.Tensor, augment: bool) -> tuple[torch.Tensor, torch.Tensor]:
        audio = neighbour_windows(windows, frame_of[rows], neighbours)
        if augment:
            audio = augment_audio(audio)
        predicted = model.predict_motion(audio)
        return (weights * (predicted - targets[rows]) ** 2).mean(), predicted

    best_loss, best_state, best_corr = float("inf"), _state(modules), 0.0
    was_training = model.training
    for step in range(1, config.motion_steps + 1):
        for module in modules:
            module.train()
        batch = fit_rows[draw_rows(len(fit_rows), config.motion_batch, take_weights).to(device)]
        loss, _ = loss_of(batch, augment=True)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if step % VALIDATE_EVERY and step != config.motion_steps:
            continue
        for module in modules:
            module.eval()
        with torch.no_grad():
            val_loss, predicted = loss_of(val_rows, augment=False)
        if float(val_loss) < best_loss:
            best_loss, best_state = float(val_loss), _state(modules)
            best_corr = mouth_opening_correlation(predicted[:, 0].float().cpu().numpy(),
                                                  targets[val_rows, 0].float().cpu().numpy())
        on_progress(Progress("motion", step / config.motion_steps,
                             f"audio->motion step {step}/{config.motion_steps} "
                             f"val {float(val_loss):.3f} best {best_loss:.3f}"))
    for module, state in zip(modules, best_state, strict=True):
        module.load_state_dict(state)
    for module in modules:
        module.eval()
    with torch.no_grad():
        predicted = loss_of(val_rows, augment=False)[1]
        components = {"off": 0, "opening": 1, "all": targets.shape[1]}[config.motion_calibrate]
        gain = calibrate_amplitude(model, predicted, targets[val_rows], components)
    model.train(was_training)
    print(f"audio->motion: best validation loss {best_loss:.4f}, "
          f"mouth-opening correlation {best_corr:.3f} on {len(val_rows)} frames, "
          f"opening gain {float(gain[0]):.2f}")
    return {"motion_val_loss": best_loss, "motion_val_mouth_corr": best_corr,
            "motion_gain_opening": float(gain[0]),
            "motion_centre_opening": float(predicted[:, 0].mean())}


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
    assert model.to_motion is not None
    linear = model.to_motion[-1]
    assert isinstance(linear, torch.nn.Linear)
    if len(predicted) < 2:  # no spread to match on one frame
        return torch.ones(predicted.shape[1])
    spread = predicted.std(dim=0).clamp_min(1e-6)
    gain = (targets.std(dim=0) / spread).clamp(1.0, max_gain).to(linear.weight.dtype)
    if components is not None:
        gain[components:] = 1.0
    centre = predicted.mean(dim=0).to(linear.weight.dtype)
    with torch.no_grad():
        linear.weight.mul_(gain[:, None])
        linear.bias.copy_(gain * linear.bias + (1.0 - gain) * centre)
    return gain.cpu()


def augment_audio(audio: torch.Tensor) -> torch.Tensor:
    """audio (B, K, W, M) normalised log-mel: another microphone, room and voice level.

    Per example: a gain (an offset in log-mel), a linear spectral tilt, a little noise and one
    masked band of up to 8 mels (SpecAugment), so the regressor listens to the shape of the
    spectrum over time, not to one recording's colour."""
    batch, mels = audio.shape[0], audio.shape[-1]
    device, dtype = audio.device, audio.dtype
    gain = torch.randn(batch, 1, 1, 1, device=device, dtype=dtype) * 0.3
    ramp = torch.linspace(-1.0, 1.0, mels, device=device, dtype=dtype)
    tilt = torch.randn(batch, 1, 1, 1, device=device, dtype=dtype) * 0.2 * ramp
    noisy = audio + gain + tilt + 0.1 * torch.randn_like(audio)
    start = torch.randint(0, mels, (batch, 1), device=device)
    width = torch.randint(0, 9, (batch, 1), device=device)
    band = torch.arange(mels, device=device)[None, :]
    masked = ((band >= start) & (band < start + width)).to(dtype)[:, None, None, :]
    return noisy * (1.0 - masked)


def _split(clip: ClipTensors, validate_on_main: bool = False) -> tuple[list[int], list[int]]:
    """Training rows in time order cut into blocks of BLOCK_FRAMES: every tenth block (from
    the fifth) validates, the rest fit. Whole blocks keep neighbouring frames, which share
    audio windows, on one side; spreading them keeps both sides alike (a single tail block
    can be a pause). A clip too short for that is fitted and validated on all its frames.
    validate_on_main: of a joined dataset, validate on the main take's blocks only (the
    voice and room that renders are judged against)."""
    rows = sorted(clip.train_rows, key=lambda row: clip.track.poses[row].frame)
    val = [row for i, row in enumerate(rows) if (i // BLOCK_FRAMES) % 10 == 5]
    fit = [row for i, row in enumerate(rows) if (i // BLOCK_FRAMES) % 10 != 5]
    main_val = set(clip.main_take_rows(val)) if validate_on_main else set()
    if main_val:
        fit += [row for row in val if row not in main_val]
        val = [row for row in val if row in main_val]
    return (fit, val) if val else (rows, rows)



def _state(modules: list[torch.nn.Module]) -> list[dict[str, torch.Tensor]]:
    return [copy.deepcopy(module.state_dict()) for module in modules]


