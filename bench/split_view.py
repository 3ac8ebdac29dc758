"""A view of a preprocessed dataset that trains on less of the clip: for data-scaling runs.

    python -m bench.split_view DATASET VIEW --train-fraction 0.25
    python -m bench.split_view DATASET VIEW --main-video-only   # a joined dataset's last video

VIEW links every file of DATASET except metadata/split.json, whose training frames are cut to
the first fraction of the original ones; the held-out frames stay the same, so runs on views
of one dataset are scored on the same frames.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import typer


def make_view(dataset: Path, view: Path, train_fraction: float, main_video_only: bool = False
              ) -> dict[str, int]:
    """Write the view; returns the number of training frames kept per person. With
    main_video_only, a dataset joined from several videos trains on its last one alone."""
    if not 0 < train_fraction <= 1:
        raise typer.BadParameter("train fraction must be in (0, 1]")
    view.mkdir(parents=True, exist_ok=True)
    for entry in dataset.iterdir():
        if entry.name != "metadata":
            _link(entry, view / entry.name)
    (view / "metadata").mkdir(exist_ok=True)
    for entry in (dataset / "metadata").iterdir():
        if entry.name != "split.json":
            _link(entry, view / "metadata" / entry.name)
    split = json.loads((dataset / "metadata" / "split.json").read_text())
    segments = json.loads((dataset / "metadata" / "info.json").read_text()).get("segments", {})
    for person, frames in split.items():
        if main_video_only:
            start = segments.get(person, [1])[-1]
            frames["train"] = [f for f in frames["train"] if f >= start]
        keep = max(1, math.ceil(len(frames["train"]) * train_fraction))
        frames["train"] = frames["train"][:keep]
    (view / "metadata" / "split.json").write_text(json.dumps(split))
    return {person: len(frames["train"]) for person, frames in split.items()}


def _link(source: Path, target: Path) -> None:
    if not target.exists():
        target.symlink_to(source.resolve(), target_is_directory=source.is_dir())


def main(dataset: Path, view: Path, train_fraction: float = 1.0,
         main_video_only: bool = False) -> None:
    print(json.dumps(make_view(dataset, view, train_fraction, main_video_only)))


if __name__ == "__main__":
    typer.run(main)
