"""The audio -> motion regressor's amplitude calibration, rendered: lip sync with and without.

    python -m bench.motion_calibration MODEL.pt DATASET

A model's regressor predicts the mouth opening with the right timing but too small a swing
(MSE regression predicts the conditional mean). train.motion.calibrate_amplitude rescales it
on the regressor's validation blocks (training frames it never fitted). Given a model trained
*without* calibration (`motion_calibrate: off`), this renders the held-out frames with the
regressor's codes raw, with every component calibrated and with the opening alone calibrated,
and scores each as `facespeech eval` does (paste-back PSNR, LMD, mouth-opening correlation).
"""

from __future__ import annotations

import copy
import json
from pathlib import Path

import torch
import typer

from facespeech.quality.evaluate import (
    audio_energy,
    load_eval_clip,
    load_model,
    render_held_out,
    sync_scores,
    track_landmarks,
)
from facespeech.train.data import ClipTensors, neighbour_windows
from facespeech.train.motion import _split, calibrate_amplitude


def predicted_codes(model: torch.nn.Module, clip: ClipTensors, rows: list[int]) -> torch.Tensor:
    frames = torch.tensor([clip.track.poses[row].frame - 1 for row in rows])
    with torch.no_grad():
        return model.predict_motion(neighbour_windows(clip.windows, frames,
                                                      model.config.audio_neighbours))


def main(checkpoint: Path, dataset: Path) -> None:
    device = torch.device("cpu")
    trained, state = load_model(checkpoint, device)
    clip = load_eval_clip(dataset, state, trained.config)
    val_rows = _split(clip)[1]
    real, energy = None, None
    result: dict[str, dict[str, float]] = {}
    for name, components in (("raw", 0), ("all", trained.config.motion_dim), ("opening", 1)):
        model = copy.deepcopy(trained)
        gain = calibrate_amplitude(model, predicted_codes(model, clip, val_rows),
                                   clip.motion[val_rows], components)
        frames, scores = render_held_out(model, clip, device)
        if real is None:
            real, energy = track_landmarks(frames.real), audio_energy(clip, frames.rows)
        result[name] = {"opening_gain": round(float(gain[0]), 3),
                        "paste_back_psnr": round(scores["ours"]["paste_back"]["psnr"], 3),
                        **sync_scores(real, track_landmarks(frames.pasted["ours"]), energy)}
        print(name, json.dumps(result[name]), flush=True)
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    typer.run(main)
