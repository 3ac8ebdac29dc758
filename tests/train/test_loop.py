"""The training loop on a tiny synthetic clip: presets, checkpoints, resume, stop, rollback."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from facespeech.dataset import features_path, read_tracks
from facespeech.hooks import Stopped
from facespeech.train import PRESETS, TrainConfig, run
from facespeech.train.checkpoints import load, save_atomic

# Small enough for two CPU cores: every preset keeps its own schedule and losses, only its
# sizes shrink.
SMALL: dict[str, Any] = {
    "image_size": 32, "render_size": 8, "plane_resolution": 16, "plane_channels": 4,
    "hidden": 16, "feature_dim": 8, "samples_per_ray": 4, "upsampler_channels": 16,
    "audio_dim": 8, "batch_size": 2, "device": "cpu", "log_every": 1, "motion_steps": 20,
}


def _config(preset: str = "tiny", **overrides: Any) -> TrainConfig:
    return TrainConfig.from_preset(preset, {**SMALL, **overrides})


@pytest.mark.parametrize("preset", sorted(PRESETS))
def test_every_preset_trains_two_steps(preset: str, synthetic_dataset: Path,
                                       tmp_path: Path) -> None:
    written: list[Path] = []
    config = _config(preset, steps=2, checkpoint_every=1, eval_every=1, eval_frames=2)
    result = run(synthetic_dataset, tmp_path, config, on_checkpoint=written.append)

    assert result.step == 2 and result.checkpoint == tmp_path / "model.pt"
    assert {"psnr", "ssim", "psnr_face", "ssim_face", "baseline_static_psnr"} <= set(result.metrics)
    assert all(np.isfinite(v) for v in result.metrics.values())
    # a warping model also scores its reference as it was warped into the target's pose
    assert ("baseline_warped_reference_psnr" in result.metrics) == config.warp_reference
    assert json.loads((tmp_path / "config.json").read_text())["steps"] == 2
    lines = [json.loads(line) for line in (tmp_path / "metrics.jsonl").open()]
    names = {line["name"] for line in lines}
    assert {"Loss/photo", "Timing/sec_per_iter", "Quality/psnr"} <= names
    # before its audio -> motion regressors are fitted, a motion-driven renderer is scored on
    # the tracked codes, logged as such; the audio-driven scores come at the end
    psnr_steps = [line["step"] for line in lines if line["name"] == "Quality/psnr"]
    tracked_steps = [line["step"] for line in lines if line["name"] == "Quality/tracked_psnr"]
    if config.use_motion:
        assert psnr_steps == [2] and tracked_steps == [1, 2]
    else:
        assert psnr_steps == [1, 2, 2] and not tracked_steps
    assert any((tmp_path / "tensorboard").iterdir())  # the same scalars, for TensorBoard
    assert [p.name for p in written] == ["step-000000001.pt", "step-000000002.pt"]
    final = load(result.checkpoint)
    assert final["step"] == 2 and final["config"]["steps"] == 2 and final["data"]["person"]


def test_warp_weight_adds_the_warped_references_error_to_the_loss(
    synthetic_dataset: Path, tmp_path: Path
) -> None:
    def first_loss(weight: float) -> float:
        config = _config("fast", steps=1, warp_weight=weight, tensorboard=False)
        run(synthetic_dataset, tmp_path / str(weight), config)
        lines = (tmp_path / str(weight) / "metrics.jsonl").open()
        return next(x["value"] for x in map(json.loads, lines) if x["name"] == "Loss/photo")

    assert first_loss(1.0) > first_loss(0.0)


@pytest.mark.gpu
def test_trains_on_cuda_with_the_clip_held_there(synthetic_dataset: Path, tmp_path: Path) -> None:
    config = _config("fast", steps=2, device="cuda", eval_every=1, eval_frames=2,
                     tensorboard=False)
    result = run(synthetic_dataset, tmp_path, config)
    assert result.step == 2
    assert all(np.isfinite(v) for v in result.metrics.values())
    assert "baseline_warped_reference_psnr" in result.metrics


@pytest.mark.parametrize("ema_decay", [0.0, 0.5])
def test_stop_then_resume_matches_an_uninterrupted_run(synthetic_dataset: Path, tmp_path: Path,
                                                        ema_decay: float) -> None:
    config = _config(steps=4, checkpoint_every=100, ema_decay=ema_decay)
    straight = run(synthetic_dataset, tmp_path / "straight", config, resume=False)

    calls = iter(range(100))
    with pytest.raises(Stopped):  # stop asked before step 2: a checkpoint must be written
        run(synthetic_dataset, tmp_path / "split", config, should_stop=lambda: next(calls) == 2)
    assert (tmp_path / "split/checkpoints/step-000000002.pt").exists()
    resumed = run(synthetic_dataset, tmp_path / "split", config)  # resume="auto"

    assert resumed.step == 4
    a, b = load(straight.checkpoint)["model"], load(resumed.checkpoint)["model"]
    for name in a:
        assert torch.equal(a[name], b[name]), name
    assert resumed.metrics == pytest.approx(straight.metrics)


def test_the_moving_average_is_scored_beside_the_weights_and_is_what_is_kept(
    synthetic_dataset: Path, tmp_path: Path
) -> None:
    config = _config(steps=3, checkpoint_every=1, eval_every=1, eval_frames=2, ema_decay=0.5)
    result = run(synthetic_dataset, tmp_path, config)

    lines = [json.loads(line) for line in (tmp_path / "metrics.jsonl").open()]
    raw = [x["value"] for x in lines if x["name"] == "Quality/psnr_face"]
    averaged = [x["value"] for x in lines if x["name"] == "Quality/ema_psnr_face"]
    assert len(averaged) == 3 and len(raw) == 4  # the last raw one is the kept model's
    assert averaged[0] == pytest.approx(raw[0])  # after one step the average is the weights
    assert averaged[1] != pytest.approx(raw[1])
    logged_for_the_average = {x["name"] for x in lines if x["name"].startswith("Quality/ema_")}
    assert "Quality/ema_baseline_static_psnr" not in logged_for_the_average
    last = load(tmp_path / "checkpoints" / "step-000000003.pt")
    kept = load(result.checkpoint)
    assert kept["ema"] is None and kept["optimizer"] is None  # final weights stay small
    for name, weights in kept["model"].items():
        assert torch.equal(weights, last["ema"][f"module.{name}"]), name
    assert any(not torch.equal(kept["model"][name], last["model"][name])
               for name in kept["model"])


def test_the_moving_average_warms_up_from_the_first_weights() -> None:
    from facespeech.train.loop import _moving_average

    layer = torch.nn.Linear(1, 1, bias=False).requires_grad_(False)
    average = _moving_average(layer, 0.999)
    assert average is not None
    for value in (0.0, 1.0):
        layer.weight.data.fill_(value)
        average.update_parameters(layer)
    # the second update decays by 2/11, not 0.999: the first weights are not kept for long
    assert average.module.weight.item() == pytest.approx(9 / 11)
    assert _moving_average(layer, 0.0) is None


def test_resume_takes_shapes_from_the_checkpoint(synthetic_dataset: Path, tmp_path: Path) -> None:
    run(synthetic_dataset, tmp_path, _config(steps=1, checkpoint_every=1))
    result = run(synthetic_dataset, tmp_path, _config(steps=2, hidden=32), resume=True)
    assert load(result.checkpoint)["config"]["hidden"] == SMALL["hidden"]


def test_resumes_a_checkpoint_older_than_a_shape_field(synthetic_dataset: Path,
                                                       tmp_path: Path) -> None:
    run(synthetic_dataset, tmp_path, _config(steps=1, checkpoint_every=1))
    path = tmp_path / "checkpoints" / "step-000000001.pt"
    state = load(path)
    del state["config"]["reference_skips"]  # written before the field existed
    save_atomic(state, path)
    # asked for skips, resumed without: the old checkpoint's weights have no encoder
    result = run(synthetic_dataset, tmp_path, _config(steps=2, reference_skips=True))
    assert result.step == 2 and load(result.checkpoint)["config"]["reference_skips"] is False


def test_keeps_only_the_last_checkpoints(synthetic_dataset: Path, tmp_path: Path) -> None:
    run(synthetic_dataset, tmp_path, _config(steps=4, checkpoint_every=1, keep_checkpoints=2))
    names = sorted(p.name for p in (tmp_path / "checkpoints").iterdir())
    assert names == ["step-000000003.pt", "step-000000004.pt"]


def _poison_features(dataset: Path, tmp_path: Path, frames: slice) -> Path:
    """A copy of the dataset whose audio features are NaN over some video frames."""
    import shutil

    copy = tmp_path / "poisoned"
    shutil.copytree(dataset, copy)
    track = read_tracks(copy)[0]
    path = features_path(copy, track.person, track.clip)
    mel = np.load(path)
    mel[frames.start * 4 : frames.stop * 4] = np.nan  # four mel frames per video frame
    np.save(path, mel)
    return copy


@pytest.mark.parametrize("ema_decay", [0.0, 0.9])
def test_nan_loss_rolls_back_and_training_goes_on(synthetic_dataset: Path, tmp_path: Path,
                                                   ema_decay: float) -> None:
    dataset = _poison_features(synthetic_dataset, tmp_path, slice(10, 14))
    result = run(dataset, tmp_path / "run", _config(steps=12, checkpoint_every=2, batch_size=1,
                                                     max_rollbacks=20, ema_decay=ema_decay))
    rollbacks = [json.loads(line) for line in (tmp_path / "run/metrics.jsonl").open()
                 if '"Train/rollback"' in line]
    assert rollbacks, "the poisoned frames should have been drawn at least once"
    assert result.step == 12
    assert all(torch.isfinite(t).all() for t in load(result.checkpoint)["model"].values())


def test_nan_loss_gives_up_after_max_rollbacks(synthetic_dataset: Path, tmp_path: Path) -> None:
    dataset = _poison_features(synthetic_dataset, tmp_path, slice(0, 1000))
    with pytest.raises(RuntimeError, match="not finite.*2 rollbacks"):
        run(dataset, tmp_path / "run", _config(steps=3, max_rollbacks=2))


def test_out_of_memory_splits_the_batch_into_micro_batches(
    synthetic_dataset: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A forward pass of more than one frame 'runs out of memory' (injected here, as a GPU
    would): training goes on with micro-batches and accumulated gradients."""
    from facespeech.model import TalkingHead

    real_forward = TalkingHead.forward
    sizes: list[int] = []

    def forward_with_a_memory_cap(self: TalkingHead, audio: torch.Tensor, *args: Any,
                                  **kwargs: Any) -> dict[str, torch.Tensor]:
        if self.training and audio.shape[0] > 1:
            raise torch.OutOfMemoryError("injected: CUDA out of memory")
        sizes.append(audio.shape[0])
        return real_forward(self, audio, *args, **kwargs)

    monkeypatch.setattr(TalkingHead, "forward", forward_with_a_memory_cap)
    result = run(synthetic_dataset, tmp_path, _config(steps=3, batch_size=2))

    assert result.step == 3
    lines = [json.loads(line) for line in (tmp_path / "metrics.jsonl").open()]
    assert [x["value"] for x in lines if x["name"] == "Train/micro_batches"] == [2]
    assert all(torch.isfinite(t).all() for t in load(result.checkpoint)["model"].values())


def test_accumulated_micro_batches_give_the_whole_batch_gradient(
    synthetic_dataset: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from facespeech.train import loop

    config = _config(steps=2, batch_size=2, ray_jitter=False)
    whole = run(synthetic_dataset, tmp_path / "whole", config)
    real = loop._accumulate_gradients

    def always_split(*args: Any) -> torch.Tensor:
        return real(*args[:-2], 2, args[-1])  # micro_batches is the second-to-last argument

    monkeypatch.setattr(loop, "_accumulate_gradients", always_split)
    split = run(synthetic_dataset, tmp_path / "split", config)
    a, b = load(whole.checkpoint)["model"], load(split.checkpoint)["model"]
    for name in a:
        torch.testing.assert_close(a[name], b[name], rtol=1e-4, atol=1e-5)
