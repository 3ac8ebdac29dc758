"""The motion-driven head: the renderer follows the tracked code, the regressor hears it."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from facespeech.model import AudioSmoother, ModelConfig, TalkingHead
from facespeech.model.audio import TemporalPooling
from facespeech.quality.evaluate import load_eval_clip, load_model
from facespeech.quality.metrics import mouth_opening_correlation
from facespeech.train import run
from facespeech.train.checkpoints import load
from facespeech.train.data import neighbour_windows
from facespeech.train.motion import (
    _next_rows,
    _split,
    augment_audio,
    block_frames,
    stretch_mels,
)
from tests.train.test_loop import _config

TINY = ModelConfig(image_size=32, render_size=8, audio_dim=8, plane_channels=4,
                   plane_resolution=16, hidden=16, feature_dim=8, samples_per_ray=4,
                   upsampler_channels=16, motion_dim=3)


def _inputs(batch: int = 2, seed: int = 0) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    c = TINY
    return {
        "audio": torch.randn(batch, c.audio_neighbours, c.audio_window, c.n_mels,
                             generator=generator),
        "eye": torch.zeros(batch, 1),
        "rotation": torch.eye(3).expand(batch, 3, 3),
        "offset": torch.zeros(batch, 3),
        "focal": torch.full((batch,), 2.0),
        "reference": torch.rand(batch, 3, c.image_size, c.image_size, generator=generator),
    }


def test_given_motion_the_image_does_not_depend_on_the_audio() -> None:
    model = TalkingHead(TINY).eval()
    motion = torch.randn(2, TINY.motion_dim)
    with torch.no_grad():
        one = model(**_inputs(seed=0), motion=motion)["rgb"]
        other_audio = _inputs(seed=1) | {"reference": _inputs(seed=0)["reference"]}
        two = model(**other_audio, motion=motion)["rgb"]
        predicted = model(**_inputs(seed=0))["rgb"]  # motion from the audio instead
    torch.testing.assert_close(one, two)
    assert not torch.allclose(one, predicted)


def test_audio_augmentation_keeps_shape_and_changes_the_spectrum() -> None:
    torch.manual_seed(0)
    audio = torch.randn(16, 8, 16, 80)
    augmented = augment_audio(audio)
    assert augmented.shape == audio.shape
    assert (augmented - audio).abs().mean() > 0.05
    assert torch.isfinite(augmented).all()


def test_audio_augmentation_can_stretch_the_mel_axis() -> None:
    ramp = torch.arange(10.0).repeat(2, 3, 4, 1)  # (B, K, W, M): each bin holds its index
    stretched = stretch_mels(ramp, torch.tensor([1.0, 2.0]))
    assert torch.equal(stretched[0], ramp[0])
    assert torch.allclose(stretched[1, 0, 0], torch.arange(10.0) / 2)  # formants move up
    shrunk = stretch_mels(ramp[:1], torch.tensor([0.5]))[0, 0, 0]
    assert shrunk[:5].tolist() == [0, 2, 4, 6, 8] and (shrunk[5:] == 9).all()  # top bin held
    torch.manual_seed(0)
    audio = torch.randn(16, 8, 16, 80)
    assert torch.isfinite(augment_audio(audio, warp=0.2)).all()


@pytest.mark.parametrize("frames", [30, 400, 3000])
def test_validation_takes_whole_blocks_spread_over_the_clip(frames: int) -> None:
    poses = [SimpleNamespace(frame=i + 1) for i in range(frames)]
    clip = SimpleNamespace(train_rows=list(range(frames))[::-1], track=SimpleNamespace(poses=poses))
    fit, val = _split(clip)  # type: ignore[arg-type]
    block = block_frames(frames)
    if frames < 6 * block:  # too short to spare a block: fit and validate on all
        assert fit == val == list(range(frames))
        return
    assert not set(fit) & set(val) and sorted(fit + val) == list(range(frames))
    starts = range(5 * block, frames - block + 1, 10 * block)
    assert val == [frame for start in starts for frame in range(start, start + block)]


def test_a_short_clip_validates_on_several_blocks_not_one() -> None:
    """14.5 s at 25 fps: 25-frame blocks would leave one second of validation in one piece."""
    rows = 362
    validation_blocks = len(range(5 * block_frames(rows), rows, 10 * block_frames(rows)))
    assert validation_blocks >= 3 and block_frames(3000) == 25


def test_each_row_knows_the_fitted_row_of_the_next_frame() -> None:
    """Rows are in any order; a frame whose successor is validated, missing or past the end
    has no pair."""
    frames = [3, 1, 2, 5, 6, 7]
    fit_rows = [0, 1, 2, 3, 4]  # frame 7 (row 5) validates
    assert _next_rows(frames, fit_rows) == [-1, 2, 0, 4, -1, -1]


def test_the_last_frame_of_a_take_has_no_next_frame() -> None:
    """Joined takes: frame 3 ends the first take, frame 4 begins the second."""
    frames = [1, 2, 3, 4, 5]
    fit_rows = [0, 1, 2, 3, 4]
    assert _next_rows(frames, fit_rows, segment_starts=[1, 4]) == [1, 2, -1, 4, -1]


@pytest.mark.slow
@pytest.mark.parametrize(("pooling", "velocity"),
                         [("attention", 0.0), ("temporal", 0.0), ("attention", 1.0)])
def test_motion_regressor_predicts_held_out_mouth_opening(tmp_path: Path, pooling: str,
                                                          velocity: float) -> None:
    """Eight seconds of synthetic speech whose mouth opening follows the voice's loudness:
    the regressor, fitted on the training frames, must follow it on the held-out tail."""
    from facespeech.train.synthetic import make_synthetic_dataset

    dataset = make_synthetic_dataset(tmp_path / "synthetic", seconds=8.0, size=32)
    config = _config(use_motion=True, steps=20, motion_steps=300, motion_pooling=pooling,
                     motion_velocity=velocity)
    result = run(dataset, tmp_path / "run", config)

    assert result.metrics["motion_val_mouth_corr"] > 0.8
    model, state = load_model(result.checkpoint, torch.device("cpu"))
    assert load(result.checkpoint)["model_config"]["motion_dim"] == 2  # opening + 1 code
    assert model.config.motion_pooling == pooling
    clip = load_eval_clip(dataset, state, model.config)
    rows = clip.held_out_rows
    frames = torch.tensor([clip.track.poses[r].frame - 1 for r in rows])
    with torch.no_grad():
        predicted = model.predict_motion(
            neighbour_windows(clip.windows, frames, model.config.audio_neighbours))
    truth = torch.tensor([clip.track.expressions[r].mouth_open for r in rows])
    assert mouth_opening_correlation(predicted[:, 0].numpy(), truth.numpy()) > 0.8


def test_masked_reference_mouth_is_not_copied() -> None:
    """With mask_reference_mouth, what the reference shows inside its mouth box cannot reach
    the output; without it, it does."""
    from dataclasses import replace

    box = torch.tensor([[0.25, 0.5, 0.75, 0.875]] * 2)
    inputs = _inputs()
    changed = inputs["reference"].clone()
    changed[:, :, 18:26, 10:22] = 1.0 - changed[:, :, 18:26, 10:22]  # inside the box only
    motion = torch.zeros(2, TINY.motion_dim)
    for masked in (True, False):
        model = TalkingHead(replace(TINY, mask_reference_mouth=masked)).eval()
        with torch.no_grad():
            one = model(**inputs, motion=motion, reference_mouth=box)["rgb"]
            two = model(**(inputs | {"reference": changed}), motion=motion,
                        reference_mouth=box)["rgb"]
        assert torch.allclose(one, two) is masked


def test_harness_can_drive_the_renderer_with_the_tracked_codes(synthetic_dataset: Path,
                                                               tmp_path: Path) -> None:
    from facespeech.quality.evaluate import predicted_motion, render_held_out

    result = run(synthetic_dataset, tmp_path, _config(use_motion=True, steps=2, motion_steps=5))
    model, state = load_model(result.checkpoint, torch.device("cpu"))
    clip = load_eval_clip(synthetic_dataset, state, model.config)
    assert clip.motion.shape == (len(clip.track.poses), model.config.motion_dim)
    from_audio, _ = render_held_out(model, clip, torch.device("cpu"))
    from_tracking, _ = render_held_out(model, clip, torch.device("cpu"),
                                       motion=clip.motion[from_audio.rows])
    assert from_audio.rows == from_tracking.rows
    assert not torch.equal(from_audio.ours_full, from_tracking.ours_full)
    predicted = predicted_motion(model, clip, from_audio.rows, None, torch.device("cpu"))
    again, _ = render_held_out(model, clip, torch.device("cpu"), motion=predicted)
    assert torch.equal(again.ours_full, from_audio.ours_full)  # the codes are all that differ


def test_the_motion_code_takes_its_shape_from_the_lips_when_the_dataset_has_them(
        synthetic_dataset: Path) -> None:
    from facespeech.dataset import read_tracks
    from facespeech.errors import InputError
    from facespeech.train import TrainConfig
    from facespeech.train.data import expression_dim_of, lip_dim_of, motion_codes

    (track,) = read_tracks(synthetic_dataset)
    config = TrainConfig(use_motion=True, motion_shape="lips")
    dims = expression_dim_of(track), lip_dim_of(track)
    assert config.to_model_config(*dims).motion_shape == "lips"
    assert config.to_model_config(dims[0], 0).motion_shape == "expression"  # an older dataset
    assert TrainConfig(use_motion=True).to_model_config(*dims).motion_shape == "expression"
    rows = list(range(len(track.poses)))
    from_lips = motion_codes(track, rows, 2, "lips")
    from_expression = motion_codes(track, rows, 2, "expression")
    assert torch.equal(from_lips[:, 0], from_expression[:, 0])  # the opening either way
    assert not from_lips[:, 1].any()  # the drawn lips have no shape besides their opening
    assert torch.allclose(from_expression[:, 1], from_expression[:, 0])  # its code is the opening
    with pytest.raises(InputError, match="motion code has 3 components"):
        motion_codes(track, rows, 3, "lips")


def test_a_checkpoint_from_before_lip_codes_reads_its_motion_code_as_expression() -> None:
    fields = {k: v for k, v in TINY.__dict__.items() if k != "motion_shape"}
    assert ModelConfig(**fields).motion_shape == "expression"


@pytest.mark.parametrize("regressors", [1, 3])
def test_calibration_restores_the_spread_of_a_shrunk_prediction(regressors: int) -> None:
    from dataclasses import replace

    from facespeech.train.motion import calibrate_amplitude

    model = TalkingHead(replace(TINY, motion_regressors=regressors)).eval()
    audio = _inputs(batch=64, seed=3)["audio"]
    with torch.no_grad():
        before = model.predict_motion(audio)
    # targets: the prediction's own pattern at twice its spread in component 0, the same in
    # 1, half in 2 (a gain below 1 is refused: the calibration never shrinks)
    centre = before.mean(dim=0)
    targets = centre + (before - centre) * torch.tensor([2.0, 1.0, 0.5])
    gain = calibrate_amplitude(model, before, targets)
    assert torch.allclose(gain, torch.tensor([2.0, 1.0, 1.0]), atol=1e-4)
    with torch.no_grad():
        after = model.predict_motion(audio)
    assert torch.allclose(after[:, :2], targets[:, :2], atol=1e-4)
    assert torch.allclose(after[:, 2], before[:, 2], atol=1e-5)


def test_calibrating_the_opening_only_leaves_the_shape_components_alone() -> None:
    from facespeech.train.motion import calibrate_amplitude

    model = TalkingHead(TINY).eval()
    audio = _inputs(batch=32, seed=4)["audio"]
    with torch.no_grad():
        before = model.predict_motion(audio)
    gain = calibrate_amplitude(model, before, before * 3.0, components=1)
    assert gain.tolist() == pytest.approx([3.0, 1.0, 1.0], abs=1e-4)
    with torch.no_grad():
        after = model.predict_motion(audio)
    assert torch.allclose(after[:, 1:], before[:, 1:], atol=1e-5)


def test_one_validation_frame_leaves_the_regressor_as_it_is() -> None:
    from facespeech.train.motion import calibrate_amplitude

    model = TalkingHead(TINY).eval()
    before = {k: v.clone() for k, v in model.regressors.state_dict().items()}
    gain = calibrate_amplitude(model, torch.zeros(1, 3), torch.ones(1, 3))
    assert gain.tolist() == [1.0, 1.0, 1.0]
    assert all(torch.equal(before[k], v) for k, v in model.regressors.state_dict().items())


def test_several_regressors_predict_their_mean() -> None:
    from dataclasses import replace

    model = TalkingHead(replace(TINY, motion_regressors=3)).eval()
    audio = _inputs(batch=4, seed=5)["audio"]
    with torch.no_grad():
        each = [regressor(audio) for regressor in model.regressors]
        mean = model.predict_motion(audio)
    assert not torch.allclose(each[0], each[1])  # initialised apart
    torch.testing.assert_close(mean, sum(each) / 3)


def test_a_checkpoint_from_before_the_regressor_list_loads_as_regressor_0() -> None:
    model = TalkingHead(TINY).eval()
    renamed = {"regressors.0.encoder.": "audio_encoder.", "regressors.0.smoother.":
               "audio_smoother.", "regressors.0.head.": "to_motion."}
    old_state = {}
    for key, value in model.state_dict().items():
        for new, old in renamed.items():
            key = key.replace(new, old)
        old_state[key] = value
    assert "to_motion.1.weight" in old_state
    loaded = TalkingHead(TINY).eval()
    loaded.load_state_dict(old_state)
    audio = _inputs(seed=6)["audio"]
    with torch.no_grad():
        torch.testing.assert_close(loaded.predict_motion(audio), model.predict_motion(audio))


def test_each_regressor_is_fitted_from_its_own_seed(synthetic_dataset: Path) -> None:
    """Two regressors started from the same weights: both move, and apart (own seeds)."""
    from dataclasses import replace

    from facespeech.dataset import load_features, read_tracks
    from facespeech.train import TrainConfig
    from facespeech.train.data import PoseNormaliser, audio_statistics, load_clip
    from facespeech.train.motion import fit_motion

    (track,) = read_tracks(synthetic_dataset)
    mel = load_features(synthetic_dataset, track.person, track.clip)
    model = TalkingHead(replace(TINY, motion_dim=2, motion_regressors=2))
    clip = load_clip(synthetic_dataset, track, 32, 32, PoseNormaliser.fit(track.poses),
                     audio_statistics(mel), mel, 4.0, 0, 2)
    first, second = model.regressors
    second.load_state_dict(first.state_dict())
    start = first.head[-1].weight.detach().clone()
    metrics = fit_motion(model, clip, TrainConfig(use_motion=True, motion_steps=20,
                                                  motion_calibrate="off"), torch.device("cpu"))
    assert not torch.allclose(first.head[-1].weight, start)
    assert not torch.allclose(second.head[-1].weight, start)
    assert not torch.allclose(first.head[-1].weight, second.head[-1].weight)
    assert metrics["motion_gain_opening"] == 1.0


def test_smoothing_over_time_keeps_a_constant_and_damps_a_flicker() -> None:
    from facespeech.model.audio import smooth_over_time

    steady = torch.full((12, 2), 3.0)
    torch.testing.assert_close(smooth_over_time(steady, 2.0), steady)
    flicker = torch.tensor([[1.0], [-1.0]] * 10)
    assert smooth_over_time(flicker, 0.0) is flicker
    damped = smooth_over_time(flicker, 2.0)
    assert damped.shape == flicker.shape
    assert damped[5:15].abs().max() < 0.05


def test_a_sequence_is_predicted_in_batches_then_smoothed() -> None:
    from dataclasses import replace

    from facespeech.model.audio import smooth_over_time

    model = TalkingHead(replace(TINY, motion_smoothing=1.5)).eval()
    windows = torch.randn(10, TINY.audio_window, TINY.n_mels)
    frames = torch.arange(10)
    with torch.no_grad():
        sequence = model.motion_sequence(
            lambda some: neighbour_windows(windows, some, TINY.audio_neighbours), frames, batch=3)
        each = model.predict_motion(neighbour_windows(windows, frames, TINY.audio_neighbours))
    torch.testing.assert_close(sequence, smooth_over_time(each, 1.5))
    assert not torch.allclose(sequence, each)


def test_the_harness_predicts_the_held_out_motion_as_one_sequence(
        synthetic_dataset: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Held-out motion comes from motion_sequence over the tail's frames in time order (where
    the smoothing is), not frame by frame inside the batches."""
    from facespeech.quality.evaluate import render_held_out

    result = run(synthetic_dataset, tmp_path, _config(use_motion=True, steps=2, motion_steps=5,
                                                      motion_smoothing=2.0))
    model, state = load_model(result.checkpoint, torch.device("cpu"))
    assert model.config.motion_smoothing == 2.0
    clip = load_eval_clip(synthetic_dataset, state, model.config)
    asked: list[list[int]] = []
    sequence = model.motion_sequence

    def spy(audio_of, frames: torch.Tensor, batch: int = 512) -> torch.Tensor:
        asked.append(frames.tolist())
        return sequence(audio_of, frames, batch)

    predicted = model.predict_motion
    sizes: list[int] = []

    def count(audio: torch.Tensor) -> torch.Tensor:
        sizes.append(len(audio))
        return predicted(audio)

    monkeypatch.setattr(model, "motion_sequence", spy)
    monkeypatch.setattr(model, "predict_motion", count)
    render_held_out(model, clip, torch.device("cpu"), batch=2)
    assert asked == [[clip.track.poses[row].frame - 1 for row in clip.held_out_rows]]
    assert sizes == [len(clip.held_out_rows)]  # once for the whole tail, never per batch


def test_temporal_pooling_hears_the_order_of_its_windows() -> None:
    """The same K codes in reverse order are another sound (a rising syllable, not a falling
    one): temporal pooling must tell them apart; a model from before has attention pooling."""
    pooling = TemporalPooling(32, 8)
    codes = torch.randn(2, 8, 32)

    assert pooling(codes).shape == (2, 32)
    assert not torch.allclose(pooling(codes), pooling(codes.flip(1)), atol=1e-4)
    old = TalkingHead(ModelConfig(motion_dim=3, image_size=32, render_size=8,
                                  plane_resolution=16, hidden=16, feature_dim=8,
                                  samples_per_ray=4, upsampler_channels=16))
    assert isinstance(old.regressors[0].smoother, AudioSmoother)
