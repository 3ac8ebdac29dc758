"""Models that redraw the lower face of the very frame they are drawn over (dubbing)."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from facespeech.dataset import read_tracks
from facespeech.quality.evaluate import LOWER_FACE_METHOD, load_eval_clip, load_model
from facespeech.train import TrainConfig, run
from facespeech.train.data import _LIPS_MEDIAPIPE, lower_face_boxes, mouth_boxes
from tests.train.test_loop import _config

LOWER_FACE = {"use_motion": True, "mask_reference_mouth": True, "mask_region": "lower_face",
              "reference_frames": "self", "motion_steps": 5}


def test_the_lower_face_box_ignores_the_lips_and_holds_them(synthetic_dataset: Path) -> None:
    """Placed by the nose and eyes only: opening the mouth wide moves no edge of the box (so
    the box's grey shape says nothing of the mouth), and the lips stay inside it."""
    track = read_tracks(synthetic_dataset)[0]
    points = np.asarray(track.landmarks, dtype=float)
    opened = points.copy()
    lower_lip = [i for i in _LIPS_MEDIAPIPE if points[0, i, 1] > points[0, 0, 1]]
    opened[:, lower_lip, 1] += 3.0  # the lower lip drops by 3 px of 32
    size = 32
    before = lower_face_boxes(track, size)
    after = lower_face_boxes(replace(track, landmarks=opened), size)
    assert torch.equal(before, after)
    lips = mouth_boxes(replace(track, landmarks=opened), size)
    assert bool((before[:, :2] <= lips[:, :2] + 0.05).all())
    assert bool((before[:, 2:] >= lips[:, 2:] - 0.05).all())


def test_drawing_over_the_target_needs_its_lower_face_hidden() -> None:
    with pytest.raises(ValueError, match="lower_face"):
        TrainConfig.from_preset("tiny", {"use_motion": True, "reference_frames": "self"})
    with pytest.raises(ValueError, match="lower_face"):
        TrainConfig.from_preset("tiny", {"use_motion": True, "reference_frames": "self",
                                         "mask_reference_mouth": True})
    config = TrainConfig.from_preset("tiny", LOWER_FACE)
    assert config.to_model_config().draws_over_target


def test_a_lower_face_model_is_scored_over_its_own_held_out_frame(
        synthetic_dataset: Path, tmp_path: Path) -> None:
    """Trains drawn over its targets; the harness gives it each held-out frame itself (lower
    face hidden) and sets the nearest-pose frame's lower face on the real frame beside it."""
    from facespeech.quality.evaluate import render_held_out

    result = run(synthetic_dataset, tmp_path, _config(steps=2, **LOWER_FACE))
    model, state = load_model(result.checkpoint, torch.device("cpu"))
    assert model.config.draws_over_target
    clip = load_eval_clip(synthetic_dataset, state, model.config)
    assert not torch.equal(clip.hidden, clip.mouth)
    frames, scores = render_held_out(model, clip, torch.device("cpu"))
    assert set(scores) == {"ours", "nearest_pose", "static", "retrieval", LOWER_FACE_METHOD}
    # the baseline differs from the real frame only inside the (feathered) lower face
    real = frames.real.float()
    lower = frames.pasted[LOWER_FACE_METHOD].float()
    top = int(clip.hidden[frames.rows, 1].min() * real.shape[-1]) - 3
    assert torch.equal(lower[..., : max(top, 0), :], real[..., : max(top, 0), :])
    assert scores[LOWER_FACE_METHOD]["paste_back"]["psnr"] > scores["nearest_pose"][
        "paste_back"]["psnr"]


def test_renders_of_a_lower_face_model_hide_and_paste_its_lower_face(
        synthetic_dataset: Path, tmp_path: Path) -> None:
    from facespeech.render import reference as references
    from facespeech.train.checkpoints import load

    result = run(synthetic_dataset, tmp_path, _config(steps=1, **LOWER_FACE))
    state = load(result.checkpoint)
    model_config = load_model(result.checkpoint, torch.device("cpu"))[0].config
    reference = references.from_dataset(synthetic_dataset, state["data"], model_config)
    track = read_tracks(synthetic_dataset)[0]
    assert torch.equal(reference.mouth, lower_face_boxes(track, state["data"][
        "source_image_size"])[: len(reference.mouth)])


def test_a_config_draws_over_the_target_from_enough_video() -> None:
    fast = TrainConfig.from_preset("fast")
    assert fast.for_video(19.9) == fast and fast.for_video(20).take_input
    never = TrainConfig.from_preset("fast", {"lower_face_min_seconds": None})
    assert never.for_video(3600) == never
    switched = TrainConfig.from_preset("fast", {"lower_face_min_seconds": 60})
    assert switched.for_video(59) == switched
    enough = switched.for_video(60)
    assert enough.to_model_config().draws_over_target and enough.reference_frames == "self"
    assert not enough.warp_reference and enough.reference_skips


def test_a_run_on_enough_video_trains_and_resumes_over_its_target(
        synthetic_dataset: Path, tmp_path: Path) -> None:
    """The synthetic clip has 1.8 s of training video: a 1 s threshold switches the run."""
    import json

    config = _config(steps=2, checkpoint_every=1, use_motion=True, motion_steps=5,
                     lower_face_min_seconds=1.0)
    result = run(synthetic_dataset, tmp_path, config)
    model, _ = load_model(result.checkpoint, torch.device("cpu"))
    assert model.config.draws_over_target
    written = json.loads((tmp_path / "config.json").read_text())
    assert written["reference_frames"] == "self"
    # resumed with the switch off, the run keeps the mode it was started in
    more = config.model_copy(update={"steps": 3, "lower_face_min_seconds": None})
    resumed = run(synthetic_dataset, tmp_path, more)
    assert resumed.step == 3
    assert json.loads((tmp_path / "config.json").read_text())["reference_frames"] == "self"
