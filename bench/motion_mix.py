"""Where the lip sync of a motion-driven model is lost: its renderer driven on the held-out
frames by codes mixed from the tracked ones and the regressors' prediction (CPU is enough).

    python -m bench.motion_mix MODEL.pt DATASET --mixes predicted,tracked,opening,shape

Mixes (component 0 is the mouth opening, the rest the shape code):
  predicted  the regressors' prediction, as `facespeech eval` renders it
  tracked    the tracked codes (eval's sync_tracked_motion)
  opening    predicted opening, tracked shape: what a perfect shape prediction would add
  shape      tracked opening, predicted shape: what a perfect opening prediction would add
  flat       predicted opening, shape held at its training mean (0)
Each mix is rendered, pasted back and tracked as eval does; printed: LMD and mouth-opening
correlation against the real frames, and how well its codes match the tracked ones
(correlation of the opening; mean squared error of the shape components). `--no-landmarks`
skips the tracking and prints the picture's scores alone (paste-back, head and full-render
PSNR): `--mixes predicted,tracked --no-landmarks` compares renderers in a few minutes, the
tracked codes taking the regressors' run-to-run noise out of the comparison.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
import typer

from facespeech.quality.evaluate import (
    audio_energy,
    load_eval_clip,
    load_model,
    predicted_motion,
    render_held_out,
    sync_scores,
    track_landmarks,
)
from facespeech.quality.metrics import mouth_opening_correlation

MIXES = ("predicted", "tracked", "opening", "shape", "flat")


def mixed_codes(mix: str, predicted: torch.Tensor, tracked: torch.Tensor) -> torch.Tensor:
    """(N, M) motion codes of `mix` (see the module docstring) from the two (N, M) sources."""
    if mix not in MIXES:
        raise typer.BadParameter(f"unknown mix {mix!r}; one of {', '.join(MIXES)}")
    opening = tracked[:, :1] if mix in ("tracked", "shape") else predicted[:, :1]
    shape = {"tracked": tracked, "opening": tracked, "flat": torch.zeros_like(tracked)}.get(
        mix, predicted)[:, 1:]
    return torch.cat([opening, shape], dim=1)


def code_agreement(codes: torch.Tensor, tracked: torch.Tensor) -> dict[str, float]:
    shape_mse = float(((codes[:, 1:] - tracked[:, 1:]) ** 2).mean()) if codes.shape[1] > 1 else 0.0
    return {"code_opening_corr": round(mouth_opening_correlation(
        codes[:, 0].numpy(), tracked[:, 0].numpy()), 3), "code_shape_mse": round(shape_mse, 3)}


def main(checkpoint: Path, dataset: Path, mixes: str = "predicted,tracked,opening,shape",
         landmarks: bool = True) -> None:
    device = torch.device("cpu")
    model, state = load_model(checkpoint, device)
    model = model.float()
    assert model.config.motion_dim, f"{checkpoint} is not a motion-driven model"
    clip = load_eval_clip(dataset, state, model.config)
    rows = clip.held_out_rows
    predicted = predicted_motion(model, clip, rows, None, device).cpu()
    tracked = clip.motion[rows].float()
    real_landmarks, energy = None, audio_energy(clip, rows)
    result: dict[str, dict[str, float]] = {}
    for mix in mixes.split(","):
        codes = mixed_codes(mix, predicted, tracked)
        frames, scores = render_held_out(model, clip, device, motion=codes)
        result[mix] = {f"{protocol}_psnr": round(scores["ours"][protocol]["psnr"], 2)
                       for protocol in ("paste_back", "head", "full")}
        if landmarks:
            if real_landmarks is None:
                real_landmarks = track_landmarks(frames.real)
            sync = sync_scores(real_landmarks, track_landmarks(frames.pasted["ours"]), energy)
            result[mix] |= {"lmd": round(sync.get("lmd", np.nan), 3),
                            "mouth_open_corr": round(sync.get("mouth_open_corr", np.nan), 3)}
        result[mix] |= code_agreement(codes, tracked)
        print(mix, json.dumps(result[mix]), flush=True)
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    typer.run(main)
