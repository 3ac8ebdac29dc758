"""Where the held-out face quality goes: training frames against held-out frames.

    python -m bench.fit_gap MODEL.pt DATASET --out gap.png [--every-train 12 --every-held-out 2]

Renders held-out frames (reference: the nearest training frame in pose, as `facespeech eval`)
and training frames (reference: the nearest in pose at least `reference_min_gap` frames away,
as in training), each driven by the audio regressor's motion code and by the tracked one, and
prints face PSNR for the four cases and per horizontal band of the face (forehead to chin),
each the PSNR of the squared error averaged over frames and pixels (so a little below the mean
of per-frame PSNRs that `facespeech eval` reports).
Training minus held-out with tracked codes is the renderer's generalisation gap; predicted
minus tracked is what the audio half costs. The PNG: a held-out frame | mean squared error on
held-out frames | on training frames (tracked codes, both on one scale).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
import typer
from PIL import Image

from facespeech.model import TalkingHead
from facespeech.quality.evaluate import load_eval_clip, load_model
from facespeech.train.data import ClipTensors, nearest_pose_rows
from facespeech.train.distributed import pick_device
from facespeech.train.loop import render_rows

BANDS = 5


def squared_error(model: TalkingHead, clip: ClipTensors, rows: list[int], min_gap: int,
                  tracked: bool, device: torch.device) -> torch.Tensor:
    """Mean over frames of the per-pixel squared error (S, S), channels averaged."""
    total = torch.zeros(clip.images.shape[-2:], device=device)
    for start in range(0, len(rows), 8):
        chunk = rows[start : start + 8]
        references = nearest_pose_rows(clip, chunk, 1, min_gap)[:, 0]
        rendered = render_rows(model, clip, torch.tensor(chunk), references, device, tracked)
        target = clip.images[chunk].to(device).float() / 255.0
        total += ((rendered - target) ** 2).mean(1).sum(0)
    return (total / len(rows)).cpu()


def face_scores(error: torch.Tensor, face: torch.Tensor) -> dict[str, float]:
    """PSNR over the face and over BANDS horizontal bands of it, top to bottom."""
    def decibels(values: torch.Tensor) -> float:
        return round(float(10 * torch.log10(1.0 / values.mean())), 2)

    rows = torch.nonzero(face)[:, 0]
    top, bottom = int(rows.min()), int(rows.max()) + 1
    scores = {"face": decibels(error[face])}
    for band in range(BANDS):
        band_mask = torch.zeros_like(face)
        start, stop = (top + (bottom - top) * edge // BANDS for edge in (band, band + 1))
        band_mask[start:stop] = True
        scores[f"band{band}"] = decibels(error[face & band_mask])
    return scores


def main(model_path: Path, dataset: Path, out: Path = Path("gap.png"), every_train: int = 12,
         every_held_out: int = 2, device: str = "auto") -> None:
    torch_device = pick_device(device)
    model, state = load_model(model_path, torch_device)
    clip = load_eval_clip(dataset, state, model.config)
    min_gap = state["config"]["reference_min_gap"]
    # one face region for every case: where the held-out frames' face masks mostly lie
    face = (clip.masks[clip.held_out_rows].float().mean(0)[0] / 255.0) > 0.5
    cases = {"held_out": (clip.held_out_rows[::every_held_out], 0),
             "train": (clip.train_rows[::every_train], min_gap)}
    errors: dict[str, torch.Tensor] = {}
    report: dict[str, dict[str, float]] = {}
    for name, (rows, gap) in cases.items():
        for tracked in (False, True):
            key = f"{name}_{'tracked' if tracked else 'predicted'}"
            errors[key] = squared_error(model, clip, rows, gap, tracked, torch_device)
            report[key] = {"frames": len(rows), **face_scores(errors[key], face)}
            print(key, json.dumps(report[key]), flush=True)
    scale = 0.01  # squared error shown white at 0.01 (20 dB)
    panels = [clip.images[clip.held_out_rows[0]].permute(1, 2, 0).numpy()]
    for key in ("held_out_tracked", "train_tracked"):
        grey = (errors[key].clamp(0, scale) / scale * 255).byte().numpy()
        panels.append(np.repeat(grey[..., None], 3, axis=2))
    Image.fromarray(np.concatenate(panels, axis=1)).save(out)
    out.with_suffix(".json").write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    typer.run(main)
