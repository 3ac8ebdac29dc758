"""bench.split_view: a dataset view that trains on less of the clip, scored on the same frames."""

from __future__ import annotations

from pathlib import Path

import pytest
import typer

from bench.split_view import make_view
from facespeech import train
from facespeech.dataset import read_tracks


def test_view_cuts_training_frames_and_keeps_held_out(
    synthetic_dataset: Path, tmp_path: Path
) -> None:
    original = read_tracks(synthetic_dataset)[0]
    kept = make_view(synthetic_dataset, tmp_path / "half", 0.5)
    view = read_tracks(tmp_path / "half")[0]
    assert kept == {view.person: len(view.train_frames)}
    assert view.train_frames == original.train_frames[: len(view.train_frames)]
    assert len(view.train_frames) == -(-len(original.train_frames) // 2)
    assert view.held_out_frames == original.held_out_frames
    assert read_tracks(synthetic_dataset)[0].train_frames == original.train_frames  # untouched
    config = train.TrainConfig.from_preset("tiny", {
        "image_size": 32, "render_size": 8, "steps": 2, "eval_frames": 1, "tensorboard": False})
    result = train.run(tmp_path / "half", tmp_path / "run", config, resume=False)
    assert "train_psnr_face" in result.metrics and "psnr_face" in result.metrics


def test_view_refuses_an_empty_fraction(synthetic_dataset: Path, tmp_path: Path) -> None:
    with pytest.raises(typer.BadParameter):
        make_view(synthetic_dataset, tmp_path / "none", 0.0)
