"""How far a render's redrawn region drifts in colour from the frame it was drawn over.

    python -m bench.render_colour MODEL RENDER.mp4 [--dataset DATASET] [--json-out OUT.json]

Every output frame of `facespeech render` is pasted over a reference frame of the person's
own video (the render's ping-pong walk). Inside the hidden box (mouth or lower face) the
pixels are the model's; the mean colour there should stay that of the frame underneath: a
mouth that opens darkens it a little, a model that brings another take's lighting shifts it
a lot (docs/QUALITY.md, session 11's smear). Reported per frame: the mean RGB difference
(output − reference) inside the box, 0–255; summed up as the median and 95th percentile of
its length and the share of frames beyond `--threshold`. Baseline in the same run: the same
measure between the reference frame and another real frame of the walk a second away (a
real mouth of another moment: what mouth movement alone shifts).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
import typer

from facespeech.media.video import iter_video_frames
from facespeech.model.camera import box_masks
from facespeech.render import RenderConfig
from facespeech.render.render import load


def colour_shift(
    model: Path, video: Path, dataset: Path | None
) -> tuple[np.ndarray, np.ndarray]:
    """(frames, 3) mean RGB of the output minus the reference frame inside the hidden box,
    and the same for the real frame a second further along the walk."""
    renderer = load(model, dataset, device="cpu")
    size = renderer.config.image_size
    frames = np.stack(list(iter_video_frames(video, renderer.data["fps"], max_side=size)))
    rows = renderer.reference_walk(len(frames), RenderConfig()).cpu()
    boxes = box_masks(renderer.reference.mouth[rows].float(), size)[:, 0].numpy() > 0.5
    images = renderer.reference.images.permute(0, 2, 3, 1).numpy()
    later = (rows + int(renderer.data["fps"])) % len(images)
    shifts, real = [], []
    for frame, row, other, box in zip(frames, rows.tolist(), later.tolist(), boxes, strict=True):
        under = images[row][box].astype(np.float32).mean(0)
        shifts.append(frame[box].astype(np.float32).mean(0) - under)
        real.append(images[other][box].astype(np.float32).mean(0) - under)
    return np.stack(shifts), np.stack(real)


def summary(shifts: np.ndarray, threshold: float) -> dict[str, float]:
    length = np.linalg.norm(shifts, axis=1)
    return {
        "frames": len(shifts),
        "median": float(np.median(length)),
        "p95": float(np.percentile(length, 95)),
        "share_over_threshold": float((length > threshold).mean()),
        "mean_rgb": [round(float(x), 2) for x in shifts.mean(0)],
    }


def main(
    model: Path, video: Path, dataset: Path | None = None, threshold: float = 8.0,
    json_out: Path | None = None,
) -> None:
    with torch.inference_mode():
        shifts, real = colour_shift(model, video, dataset)
    result = {"render": summary(shifts, threshold),
              "real_frame_a_second_on": summary(real, threshold), "threshold": threshold,
              "per_frame": [round(float(x), 2) for x in np.linalg.norm(shifts, axis=1)]}
    if json_out:
        json_out.write_text(json.dumps(result, indent=2))
    print(json.dumps({k: v for k, v in result.items() if k != "per_frame"}, indent=2))


if __name__ == "__main__":
    typer.run(main)
