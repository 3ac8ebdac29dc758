"""A dataset joined from several videos: references and retrieved frames stay in their video."""

from __future__ import annotations

from dataclasses import asdict, replace
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from facespeech import train
from facespeech.dataset import image_path, load_features, read_tracks
from facespeech.model import ModelConfig
from facespeech.quality.evaluate import load_eval_clip, load_model, retrieval_rows
from facespeech.render.reference import from_dataset
from facespeech.train import motion
from facespeech.train.config import TrainConfig
from facespeech.train.data import (
    ClipTensors,
    PoseNormaliser,
    audio_statistics,
    load_clip,
    model_inputs,
    nearest_pose_rows,
)
from facespeech.train.loop import _sample_rows
from facespeech.train.motion import _split
from tests.train.conftest import joined_view


def _clip(root: Path, segment_starts: list[int], **options: object) -> ClipTensors:
    track = replace(read_tracks(root)[0], segment_starts=segment_starts)
    mel = load_features(root, track.person, track.clip)
    return load_clip(root, track, 32, 32, PoseNormaliser.fit(track.poses),
                     audio_statistics(mel), mel, 4.0, 1, **options)  # type: ignore[arg-type]


def test_rows_know_their_source_video(synthetic_dataset: Path) -> None:
    clip = _clip(synthetic_dataset, [1, 21])
    frames = torch.tensor([p.frame for p in clip.track.poses])
    assert torch.equal(clip.segment, (frames >= 21).long())
    assert int(_clip(synthetic_dataset, [1]).segment.max()) == 0


def test_references_and_retrieval_never_cross_videos(synthetic_dataset: Path) -> None:
    whole = _clip(synthetic_dataset, [1])
    joined = _clip(synthetic_dataset, [1, 21])
    rows = list(range(len(joined.track.poses)))
    # the synthetic head turns back and forth, so the nearest poses of one clip lie in both
    crossing = whole.segment[nearest_pose_rows(whole, rows, 4, 3)] != joined.segment[rows][:, None]
    assert crossing.any()
    references = nearest_pose_rows(joined, rows, 4, 3)
    assert torch.equal(joined.segment[references],
                       joined.segment[rows][:, None].expand_as(references))
    retrieved = retrieval_rows(joined, joined.held_out_rows)
    assert (joined.segment[retrieved] == joined.segment[joined.held_out_rows]).all()


def test_renders_walk_over_the_main_video_only(synthetic_dataset: Path, tmp_path: Path) -> None:
    joined = joined_view(synthetic_dataset, tmp_path / "joined", [1, 21])
    track = read_tracks(joined)[0]
    data = {"person": track.person, "source_image_size": 32,
            "pose_normaliser": asdict(PoseNormaliser.fit(track.poses))}
    walk = from_dataset(joined, data, ModelConfig(image_size=32, render_size=8))
    main_frames = [f for f in track.train_frames if f >= 21]
    assert len(walk) == len(main_frames)
    expected = torch.stack([torch.from_numpy(np.array(Image.open(
        image_path(joined, track.person, f)).convert("RGB"))).permute(2, 0, 1)
        for f in main_frames])
    assert torch.equal(walk.images, expected)


def test_batches_draw_the_main_take_by_its_share(synthetic_dataset: Path) -> None:
    joined = _clip(synthetic_dataset, [1, 21])
    rows = joined.train_rows
    assert joined.take_weights(rows, None) is None
    assert _clip(synthetic_dataset, [1]).take_weights(rows, 0.5) is None  # one take
    weights = joined.take_weights(rows, 0.7)
    assert weights is not None
    main = joined.segment[rows] == 1
    assert 0 < int(main.sum()) < len(rows)
    assert float(weights[main].sum()) == pytest.approx(0.7)
    assert float(weights[~main].sum()) == pytest.approx(0.3)
    torch.manual_seed(0)
    drawn = _sample_rows(joined, None, 4000, weights)[0]
    assert float((joined.segment[drawn] == 1).float().mean()) == pytest.approx(0.7, abs=0.03)
    assert joined.main_take_rows(rows) == [row for row in rows if bool(main[rows.index(row)])]


def test_motion_validation_stays_on_the_main_take(synthetic_dataset: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(motion, "BLOCK_FRAMES", 2)  # validation blocks in both takes
    monkeypatch.setattr(motion, "MIN_BLOCK_FRAMES", 2)
    joined = _clip(synthetic_dataset, [1, 21])
    assert {int(joined.segment[row]) for row in _split(joined)[1]} == {0, 1}
    fit, val = _split(joined, validate_on_main=True)
    everything_fit, everything_val = _split(joined)
    assert sorted(fit + val) == sorted(everything_fit + everything_val)
    assert val and all(int(joined.segment[row]) == 1 for row in val)


def test_motion_codes_standardised_per_take(synthetic_dataset: Path) -> None:
    """Per take, each take's training frames have mean 0 and spread 1 on every component;
    over the whole clip, only the union has."""
    options = {"motion_dim": 2}
    whole = _clip(synthetic_dataset, [1, 21], **options)
    per_take = _clip(synthetic_dataset, [1, 21], motion_per_take=True, **options)
    train = torch.tensor(whole.train_rows)
    for take in (0, 1):
        rows = train[per_take.segment[train] == take]
        codes = per_take.motion[rows].double()
        assert torch.allclose(codes.mean(0), torch.zeros(2, dtype=torch.float64), atol=1e-5)
        assert torch.allclose(codes.std(0, unbiased=False), torch.ones(2, dtype=torch.float64),
                              atol=1e-4)
    assert not torch.allclose(whole.motion[train[whole.segment[train] == 0]].mean(0),
                              torch.zeros(2), atol=1e-3)
    one_take = _clip(synthetic_dataset, [1], motion_per_take=True, **options)
    assert torch.allclose(one_take.motion, _clip(synthetic_dataset, [1], **options).motion)


def test_a_take_aware_model_tells_the_takes_apart(synthetic_dataset: Path,
                                                  tmp_path: Path) -> None:
    """take_input on a two-take dataset: the field gets the take, the checkpoint keeps it,
    and a frame drawn without one (as renders draw) is drawn as the main take's."""
    joined = joined_view(synthetic_dataset, tmp_path / "joined", [1, 21])
    config = TrainConfig.from_preset("tiny", {
        "image_size": 32, "render_size": 8, "steps": 2, "eval_frames": 1, "tensorboard": False,
        "take_input": True})
    result = train.run(joined, tmp_path / "run", config, resume=False)
    model, state = load_model(result.checkpoint, torch.device("cpu"))
    assert model.config.takes == 2
    clip = load_eval_clip(joined, state, model.config)
    rows = torch.tensor(clip.held_out_rows[:2])
    inputs = model_inputs(clip, rows, rows, model.config.audio_neighbours, torch.device("cpu"))
    torch.nn.init.normal_(model.field.decoder[0].weight)  # two steps barely use the input
    with torch.no_grad():
        main = model(**inputs)["rgb"]
        unnamed = model(**{**inputs, "take": None})["rgb"]
        other = model(**{**inputs, "take": torch.zeros_like(inputs["take"])})["rgb"]
    assert torch.equal(inputs["take"], torch.ones(2, dtype=torch.long))
    assert torch.allclose(main, unnamed) and not torch.allclose(main, other)
    one_take = TrainConfig(take_input=True).to_model_config(takes=1)
    assert one_take.take_dim == 0
