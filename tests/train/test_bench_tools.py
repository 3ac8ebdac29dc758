"""The bench tools behind docs/QUALITY.md: split_view, fit_gap, carry, refit_motion, motion_mix,
embedding_probe."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import typer
from PIL import Image

from bench import carry, fit_gap
from bench.split_view import make_view
from facespeech import train
from facespeech.dataset import image_path, read_tracks
from tests.train.conftest import joined_view


def _tiny_config(**overrides: object) -> train.TrainConfig:
    """`tiny` at 32² for a couple of steps: enough to show a dataset trains."""
    return train.TrainConfig.from_preset("tiny", {
        "image_size": 32, "render_size": 8, "eval_frames": 1, "tensorboard": False, **overrides})


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
    config = _tiny_config(steps=2)
    result = train.run(tmp_path / "half", tmp_path / "run", config, resume=False)
    assert "train_psnr_face" in result.metrics and "psnr_face" in result.metrics


def test_view_refuses_an_empty_fraction(synthetic_dataset: Path, tmp_path: Path) -> None:
    with pytest.raises(typer.BadParameter):
        make_view(synthetic_dataset, tmp_path / "none", 0.0)


def test_fit_gap_scores_four_cases_per_band_and_draws_the_error_map(
    synthetic_dataset: Path, tmp_path: Path
) -> None:
    config = _tiny_config(steps=3, use_motion=True, motion_steps=5)
    model = train.run(synthetic_dataset, tmp_path / "run", config, resume=False).checkpoint
    out = tmp_path / "gap.png"
    fit_gap.main(model, synthetic_dataset, out=out, every_train=3, every_held_out=1,
                 device="cpu")
    report = json.loads(out.with_suffix(".json").read_text())
    assert set(report) == {"held_out_predicted", "held_out_tracked", "train_predicted",
                           "train_tracked"}
    for scores in report.values():
        assert set(scores) == {"frames", "face", *(f"band{b}" for b in range(fit_gap.BANDS))}
        assert scores["frames"] > 0 and 0 < scores["face"] < 100
    track = read_tracks(synthetic_dataset)[0]
    assert report["held_out_tracked"]["frames"] == len(track.held_out_frames)
    assert report["train_tracked"]["frames"] == len(track.train_frames[::3])
    assert Image.open(out).size == (3 * 32, 32)


def test_view_of_a_joined_dataset_can_train_on_its_main_video_alone(
    synthetic_dataset: Path, tmp_path: Path
) -> None:
    joined = joined_view(synthetic_dataset, tmp_path / "joined", [1, 21])
    make_view(joined, tmp_path / "main", 1.0, main_video_only=True)
    original, view = read_tracks(joined)[0], read_tracks(tmp_path / "main")[0]
    assert view.train_frames == [f for f in original.train_frames if f >= 21]
    assert view.held_out_frames == original.held_out_frames and view.segment_starts == [1, 21]


def test_training_on_a_main_video_view_loads_only_its_frames_and_trains_the_same(
    synthetic_dataset: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Frames outside the view's split are never loaded, and leaving them out changes
    nothing the run learns: the same weights, step for step, as a run that loads them."""
    from facespeech.train import checkpoints, loop

    joined = joined_view(synthetic_dataset, tmp_path / "joined", [1, 21])
    view = tmp_path / "main"
    make_view(joined, view, 1.0, main_video_only=True)
    track = read_tracks(view)[0]
    loaded: list[int] = []
    load_clip = loop.load_clip

    def counting(root: Path, clip_track: object, *args: object) -> object:
        clip = load_clip(root, clip_track, *args)
        loaded.append(len(clip.images))
        return clip

    monkeypatch.setattr(loop, "load_clip", counting)
    config = _tiny_config(steps=3, use_motion=True, motion_steps=20, reference_frames="near_pose")
    cut = train.run(view, tmp_path / "cut", config, resume=False)
    monkeypatch.setattr(loop, "split_frames_only", lambda whole: whole)
    whole = train.run(view, tmp_path / "whole", config, resume=False)

    assert loaded == [len(track.train_frames) + len(track.held_out_frames), len(track.poses)]
    assert loaded[0] < loaded[1]
    weights = [checkpoints.load(run.checkpoint) for run in (cut, whole)]
    assert weights[0]["data"] == weights[1]["data"]
    for name, value in weights[0]["model"].items():
        assert torch.equal(value, weights[1]["model"][name]), name
    assert cut.metrics == pytest.approx(whole.metrics)


def test_evaluating_a_main_video_view_loads_only_its_frames_and_scores_the_same(
    synthetic_dataset: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from facespeech.quality import evaluate as harness

    joined = joined_view(synthetic_dataset, tmp_path / "joined", [1, 21])
    view = tmp_path / "main"
    make_view(joined, view, 1.0, main_video_only=True)
    checkpoint = train.run(view, tmp_path / "run", _tiny_config(steps=2), resume=False).checkpoint
    model, state = harness.load_model(checkpoint, torch.device("cpu"))
    clip = harness.load_eval_clip(view, state, model.config)
    track = read_tracks(view)[0]
    assert [p.frame for p in clip.track.poses] == sorted(
        track.train_frames + track.held_out_frames)
    assert len(clip.images) == len(clip.masks) == len(clip.track.poses) < len(track.poses)
    _, trimmed = harness.render_held_out(model, clip, torch.device("cpu"))
    monkeypatch.setattr(harness, "split_frames_only", lambda whole: whole)
    everything = harness.load_eval_clip(view, state, model.config)
    assert len(everything.images) == len(track.poses)
    _, scores = harness.render_held_out(model, everything, torch.device("cpu"))

    def flat(nested: dict) -> dict:
        return {(m, p, k): v for m, by in nested.items() for p, s in by.items()
                for k, v in s.items()}

    assert flat(scores) == pytest.approx(flat(trimmed))


def test_refit_motion_keeps_the_renderer_and_fits_new_regressors(
        synthetic_dataset: Path, tmp_path: Path) -> None:
    import torch

    from bench import refit_motion
    from facespeech.quality.evaluate import load_model
    from facespeech.train.checkpoints import load
    from tests.train.test_loop import _config

    trained = train.run(synthetic_dataset, tmp_path / "run",
                        _config(use_motion=True, steps=2, motion_steps=5)).checkpoint
    refit = tmp_path / "refit.pt"
    refit_motion.main(trained, synthetic_dataset, refit,
                      json.dumps({"motion_regressors": 2, "motion_smoothing": 1.5, "seed": 1,
                                  "audio_neighbours": 4, "motion_pooling": "temporal"}))
    before, after = load(trained), load(refit)
    assert after["model_config"]["motion_regressors"] == 2
    assert after["model_config"]["motion_smoothing"] == 1.5
    assert after["model_config"]["audio_neighbours"] == 4  # the regressors hear less context
    model, _ = load_model(refit, torch.device("cpu"))
    assert model.regressors[0].smoother.mix.in_features == 4 * model.config.audio_dim
    assert after["model_config"]["motion_pooling"] == "temporal"
    for key, value in before["model"].items():
        if not key.startswith("regressors."):
            assert torch.equal(after["model"][key], value), key
    assert not torch.equal(after["model"]["regressors.0.head.1.weight"],  # other seed, refitted
                           before["model"]["regressors.0.head.1.weight"])
    assert "regressors.1.head.1.weight" in after["model"]


def _crop_psnr(sent_root: Path, back_root: Path, person: str, frame: int) -> float:
    sent = np.asarray(Image.open(image_path(sent_root, person, frame)), float)
    got = np.asarray(Image.open(image_path(back_root, person, frame)), float)
    return float(10 * np.log10(255**2 / np.mean((sent - got) ** 2)))


def test_carried_dataset_trains_like_the_original(synthetic_dataset: Path, tmp_path: Path) -> None:
    """bench.carry: what travels to the device is a dataset training reads, crops within
    WebP's loss of the originals, and nothing training does not read."""
    archive = tmp_path / "data.tar.xz"
    carry.pack(synthetic_dataset, archive)
    carry.unpack(archive, tmp_path / "back")
    original, back = read_tracks(synthetic_dataset)[0], read_tracks(tmp_path / "back")[0]
    assert back.train_frames == original.train_frames
    assert back.held_out_frames == original.held_out_frames
    assert not list((tmp_path / "back").glob("audio/**/*.wav"))
    assert not list((tmp_path / "back").glob("images/**/*.webp"))
    for frame in (1, original.train_frames[-1]):
        assert _crop_psnr(synthetic_dataset, tmp_path / "back", original.person, frame) > 35
    config = _tiny_config(steps=2)
    result = train.run(tmp_path / "back", tmp_path / "run", config, resume=False)
    assert "psnr_face" in result.metrics


def test_carried_view_holds_the_linked_files_and_shrinks_the_unused_crops(
        synthetic_dataset: Path, tmp_path: Path) -> None:
    """A split_view view is links to its dataset: the archive holds the files themselves, and
    the crops of frames the view no longer names travel at low quality."""
    make_view(synthetic_dataset, tmp_path / "half", 0.5)
    archive = tmp_path / "half.tar.xz"
    carry.pack(tmp_path / "half", archive)
    carry.unpack(archive, tmp_path / "back")
    view, back = read_tracks(tmp_path / "half")[0], read_tracks(tmp_path / "back")[0]
    assert back.train_frames == view.train_frames and len(back.poses) == len(view.poses)
    assert not [p for p in (tmp_path / "back").rglob("*") if p.is_symlink()]
    dropped = read_tracks(synthetic_dataset)[0].train_frames[-1]
    assert dropped not in view.train_frames
    kept = view.train_frames[0]
    assert (_crop_psnr(synthetic_dataset, tmp_path / "back", view.person, kept) > 35
            > _crop_psnr(synthetic_dataset, tmp_path / "back", view.person, dropped))


def test_motion_mix_takes_each_part_of_the_code_from_the_source_it_names() -> None:
    from bench.motion_mix import MIXES, mixed_codes

    predicted, tracked = torch.full((4, 3), 1.0), torch.full((4, 3), 2.0)
    expected = {"predicted": [1, 1, 1], "tracked": [2, 2, 2], "opening": [1, 2, 2],
                "shape": [2, 1, 1], "flat": [1, 0, 0]}
    assert set(expected) == set(MIXES)
    for mix, row in expected.items():
        assert mixed_codes(mix, predicted, tracked)[0].tolist() == row, mix
    with pytest.raises(typer.BadParameter):
        mixed_codes("neither", predicted, tracked)


def test_embedding_probe_scores_the_mel_ridge_and_stacks_embeddings(
        synthetic_dataset: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Without an embedding model the probe scores the log-mel ridge alone; embeddings (here
    made up) join as the 5 frames around each frame, clamped at the clip's ends."""
    from bench import embedding_probe

    embedding_probe.main(synthetic_dataset)
    scores = json.loads(capsys.readouterr().out)["mel"]
    assert -1.0 <= scores["held_out_opening_corr"] <= 1.0
    assert np.isfinite(scores["held_out_shape_mse"])

    windows = torch.zeros(10, 4, 3)
    embeddings = np.arange(10, dtype=np.float32)[:, None].repeat(2, axis=1)
    both = embedding_probe.features("mel+emb", windows, embeddings, np.array([0, 9]), 2)
    assert both.shape == (2, 2 * 4 * 3 + 5 * 2)
    assert both[0, -10:].tolist() == [0, 0, 0, 0, 0, 0, 1, 1, 2, 2]
    assert both[1, -10:].tolist() == [7, 7, 8, 8, 9, 9, 9, 9, 9, 9]
