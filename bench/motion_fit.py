"""The audio -> motion regressor alone, fitted on a dataset's clip (CPU is enough).

    python -m bench.motion_fit DATASET --shape lips --seeds 3 --steps 3000 --smooth 0,1,2
    python -m bench.motion_fit DATASET --checkpoint MODEL.pt   # also score the trained one

The renderer of a motion-driven model follows the tracked codes far better than the
regressor predicts them (docs/QUALITY.md: 0.84 against 0.60 mouth-opening correlation on the
obama held-out frames), so the regressor is what limits lip sync. This fits it from freshly
initialised weights (no renderer is trained: the `fast` preset's audio modules, or the
checkpoint's) and scores the *held-out* tail without rendering: correlation of predicted and
tracked mouth opening, of each shape component, and the mean squared error of the whole
code. `--shape` picks the code's shape components (lips: the lip contour without its
opening; expression: the whole-face code). Each `--smooth` sigma (frames) also scores the
prediction after a zero-phase Gaussian over time. `--first-seed` starts the seeds elsewhere, so
more seeds of a setting can run beside the first ones. `--model-overrides` changes the fresh
model's ModelConfig (e.g. '{"audio_neighbours": 16}': more audio context). `--group G` also
scores the mean of each run of G consecutive seeds (how much an ensemble of G varies from one
set of seeds to the next).
"""

from __future__ import annotations

import copy
import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
import typer
from scipy.ndimage import gaussian_filter1d

from facespeech.dataset import load_features, read_tracks
from facespeech.model import TalkingHead
from facespeech.quality.evaluate import load_eval_clip, load_model
from facespeech.quality.metrics import mouth_opening_correlation
from facespeech.train import TrainConfig
from facespeech.train.data import (
    ClipTensors,
    PoseNormaliser,
    audio_statistics,
    expression_dim_of,
    lip_dim_of,
    load_clip,
    neighbour_windows,
)
from facespeech.train.motion import fit_motion


def held_out_prediction(model: TalkingHead, clip: ClipTensors,
                        device: torch.device) -> tuple[np.ndarray, np.ndarray]:
    """(predicted, tracked) motion codes of the held-out rows, in time order."""
    rows = sorted(clip.held_out_rows, key=lambda row: clip.track.poses[row].frame)
    frames = torch.tensor([clip.track.poses[row].frame - 1 for row in rows], device=device)
    audio = neighbour_windows(clip.windows.to(device), frames, model.config.audio_neighbours)
    model.eval()
    with torch.no_grad():
        predicted = model.predict_motion(audio).float().cpu().numpy()
    return predicted, clip.motion[rows].float().numpy()


def per_bin(windows: torch.Tensor) -> torch.Tensor:
    """Normalise (T, W, M) windows per mel bin over the whole recording (cepstral mean and
    variance normalisation): the experiment `--norm bins`."""
    mean = windows.mean(dim=(0, 1), keepdim=True)
    return (windows - mean) / windows.std(dim=(0, 1), keepdim=True).clamp_min(1e-3)


def voice_windows(path: Path, seconds: float, fps: int, stats: tuple[float, float],
                  norm: str) -> torch.Tensor:
    """A voice's first `seconds` as normalised windows, as evaluate.other_audio_sync makes
    them (loudness-normalised log-mel; then the clip's statistics or its own per bin)."""
    from facespeech.dataset import SAMPLE_RATE
    from facespeech.media import load_audio
    from facespeech.preprocess.audio_features import log_mel, normalise_loudness
    from facespeech.quality.evaluate import MAX_VOICE_SECONDS
    from facespeech.train.data import audio_windows

    wave = load_audio(path, SAMPLE_RATE, max_seconds=MAX_VOICE_SECONDS)[
        : round(seconds * SAMPLE_RATE)]
    windows = audio_windows(log_mel(normalise_loudness(wave)), int(len(wave) / SAMPLE_RATE * fps),
                            *stats)
    return per_bin(windows) if norm == "bins" else windows


def voice_sync(model: TalkingHead, clip: ClipTensors, windows: torch.Tensor
               ) -> dict[str, float]:
    """Best correlation (lag within +-5 frames) of the predicted mouth opening with the
    voice's energy: the regressor's half of evaluate.other_audio_sync, without rendering."""
    from facespeech.quality.evaluate import audio_energy, best_lag

    frames = torch.arange(len(windows))
    model.eval()
    with torch.no_grad():
        opening = model.predict_motion(neighbour_windows(
            windows, frames, model.config.audio_neighbours))[:, 0].numpy()
    energy = audio_energy(clip, frames.tolist(), windows)
    lag, correlation = best_lag(energy, opening)
    return {"energy_corr": round(correlation, 3), "lag": lag}


def scores(predicted: np.ndarray, tracked: np.ndarray) -> dict[str, object]:
    shape_corr = [round(mouth_opening_correlation(predicted[:, i], tracked[:, i]), 3)
                  for i in range(1, tracked.shape[1])]
    return {"mouth_corr": round(mouth_opening_correlation(predicted[:, 0], tracked[:, 0]), 4),
            "shape_corr": shape_corr,
            "mse": round(float(((predicted - tracked) ** 2).mean()), 4)}


def untrained(dataset: Path, config: TrainConfig, model_overrides: dict[str, object]
              ) -> tuple[TalkingHead, ClipTensors, tuple[float, float]]:
    """A fresh model of `config`'s shape (with `model_overrides` on its ModelConfig) and the
    dataset's clip, set up as training does (pose normaliser and audio statistics from the
    clip); frames are loaded small, since only the audio and the codes are used."""
    track = read_tracks(dataset)[0]
    mel = load_features(dataset, track.person, track.clip)
    model_config = replace(config.to_model_config(expression_dim_of(track), lip_dim_of(track)),
                           **model_overrides)
    stats = audio_statistics(mel)
    clip = load_clip(
        dataset, track, 32, 512, PoseNormaliser.fit(track.poses), stats, mel,
        model_config.camera_distance, model_config.expression_dim, model_config.motion_dim,
        model_config.motion_shape, motion_per_take=model_config.motion_per_take,
    )
    return TalkingHead(model_config), clip, stats


def main(dataset: Path, checkpoint: Path | None = None, preset: str = "fast",
         shape: str = "lips", seeds: int = 3, steps: int = 3000, smooth: str = "0,1,2",
         overrides: str = "{}", norm: str = "global", voices: str = "",
         voice_seconds: float = 20.0, group: int = 0, model_overrides: str = "{}",
         first_seed: int = 0) -> None:
    device = torch.device("cpu")
    sigmas = [float(s) for s in smooth.split(",")]
    result: dict[str, object] = {}
    if checkpoint is not None:
        trained, state = load_model(checkpoint, device)
        trained = trained.float()
        clip = load_eval_clip(dataset, state, trained.config)
        predicted, tracked = held_out_prediction(trained, clip, device)
        result["as_trained"] = {f"smooth_{s:g}": scores(_smoothed(predicted, s), tracked)
                                for s in sigmas}
        stats = (state["data"]["audio_mean"], state["data"]["audio_std"])
        config = TrainConfig.model_validate({**state["config"], "motion_steps": steps,
                                             **json.loads(overrides)})
    else:
        config = TrainConfig.from_preset(preset, {"motion_shape": shape, "motion_steps": steps,
                                                  **json.loads(overrides)})
        trained, clip, stats = untrained(dataset, config, json.loads(model_overrides))
        tracked = held_out_prediction(trained, clip, device)[1]
    result["motion_shape"] = trained.config.motion_shape
    if norm == "bins":
        clip.windows = per_bin(clip.windows)
    result["norm"] = norm
    voice_paths = [Path(v) for v in voices.split(",") if v]
    runs = []
    for seed in range(first_seed, first_seed + seeds):
        model = copy.deepcopy(trained)
        torch.manual_seed(seed)
        for layer in model.regressors.modules():
            if hasattr(layer, "reset_parameters"):
                layer.reset_parameters()
        fit_motion(model, clip, config.model_copy(update={"seed": seed}), device)
        runs.append(held_out_prediction(model, clip, device)[0])
        result[f"seed_{seed}"] = {f"smooth_{s:g}": scores(_smoothed(runs[-1], s), tracked)
                                  for s in sigmas}
        result[f"seed_{seed}"]["voices"] = {
            v.stem: voice_sync(model, clip, voice_windows(v, voice_seconds, 25, stats, norm))
            for v in voice_paths}
    ensemble = np.mean(runs, axis=0)
    result["ensemble"] = {f"smooth_{s:g}": scores(_smoothed(ensemble, s), tracked)
                          for s in sigmas}
    for first in range(0, seeds - group + 1, group) if group > 1 else []:
        mean = np.mean(runs[first:first + group], axis=0)
        result[f"mean_of_seeds_{first}_to_{first + group - 1}"] = scores(mean, tracked)
    print(json.dumps(result, indent=1))


def _smoothed(codes: np.ndarray, sigma: float) -> np.ndarray:
    return gaussian_filter1d(codes, sigma, axis=0, mode="nearest") if sigma > 0 else codes


if __name__ == "__main__":
    typer.run(main)
