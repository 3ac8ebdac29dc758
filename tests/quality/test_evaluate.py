"""The held-out evaluation harness: protocols, baselines, sync statistics, the grid."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from facespeech.quality import evaluate as harness
from facespeech.train import TrainConfig, run
from facespeech.train.synthetic import make_synthetic_dataset


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("eval")
    dataset = make_synthetic_dataset(root / "data", seconds=2.0, size=32)
    config = TrainConfig.from_preset("tiny", {
        "image_size": 32, "render_size": 8, "plane_resolution": 16, "plane_channels": 4,
        "hidden": 16, "feature_dim": 8, "samples_per_ray": 4, "upsampler_channels": 16,
        "audio_dim": 8, "batch_size": 2, "device": "cpu", "steps": 2, "tensorboard": False,
    })
    return run(dataset, root / "run", config).checkpoint, dataset


def test_every_method_and_protocol_is_scored(trained: tuple[Path, Path], tmp_path: Path) -> None:
    checkpoint, dataset = trained
    result = harness.evaluate(checkpoint, dataset, "cpu", landmarks=False,
                              grid=tmp_path / "grid.png")
    scores = result["scores"]
    assert set(scores) == set(harness.METHODS)
    for method in harness.METHODS:
        assert set(scores[method]) == set(harness.PROTOCOLS)
        for protocol in harness.PROTOCOLS:
            assert np.isfinite(scores[method][protocol]["psnr"])
            assert -1 <= scores[method][protocol]["ssim"] <= 1
        # pasting onto the real frame can only keep or remove error outside the face
        assert scores[method]["paste_back"]["psnr"] >= scores[method]["full"]["psnr"] - 1e-6
    assert (tmp_path / "grid.png").stat().st_size > 0


def test_retrieval_finds_the_frame_with_the_same_audio(trained: tuple[Path, Path]) -> None:
    checkpoint, dataset = trained
    model, state = harness.load_model(checkpoint, harness.pick_device("cpu"))
    clip = harness.load_eval_clip(dataset, state, model.config)
    rows = clip.train_rows[:5]
    found = harness.retrieval_rows(clip, rows).tolist()

    def window(row: int) -> torch.Tensor:
        return clip.windows[clip.track.poses[row].frame - 1]

    assert all(torch.equal(window(a), window(b)) for a, b in zip(rows, found, strict=True))


def _face(mouth_gap: float, shift: float = 0.0) -> np.ndarray:
    points = np.zeros((478, 2))
    points[:, 0] = np.arange(478) % 20 + shift
    points[harness.FOREHEAD], points[harness.CHIN] = (0, 0), (0, 100)
    points[harness.UPPER_INNER_LIP], points[harness.LOWER_INNER_LIP] = (0, 70), (0, 70 + mouth_gap)
    return points


def test_sync_scores_measure_distance_correlation_and_offset() -> None:
    gaps = np.abs(np.sin(np.arange(40) / 3.0)) * 10
    real = [_face(g) for g in gaps]
    late = [_face(g, shift=2.0) for g in np.roll(gaps, 2)]  # two frames late, 2 px to the side
    scores = harness.sync_scores(real, late, energy=gaps)
    assert scores["av_offset_frames"] == 2
    assert scores["av_corr"] == pytest.approx(1.0, abs=1e-6)
    assert scores["lmd"] == pytest.approx(2.0, abs=0.5)  # lips move by the gap too
    assert scores["mouth_open_corr"] < 0.9
    assert harness.sync_scores(real, real, gaps)["mouth_open_corr"] == pytest.approx(1.0)
    assert harness.sync_scores(real, [None] * len(real), gaps) == {"tracked_fraction": 0.0}


def test_other_voices_longer_than_the_tail_are_cut_to_it(trained: tuple[Path, Path],
                                                         tmp_path: Path) -> None:
    import soundfile

    from facespeech.dataset import SAMPLE_RATE
    from facespeech.train.synthetic import synthetic_voice

    checkpoint, dataset = trained
    voice = tmp_path / "long_voice.wav"
    soundfile.write(voice, synthetic_voice(30.0, seed=5), SAMPLE_RATE)  # far past the tail
    result = harness.other_audio_sync(checkpoint, dataset, [voice], "cpu")
    held_out = len(harness.load_eval_clip(dataset, *_state_and_config(checkpoint)).held_out_rows)
    assert result["long_voice"]["frames"] == held_out
    assert set(result["long_voice"]) == {"frames", "energy_corr", "lag_frames", "mouth_open_std"}


def _state_and_config(checkpoint: Path) -> tuple[dict, object]:
    model, state = harness.load_model(checkpoint, torch.device("cpu"))
    return state, model.config


def test_lpips_is_scored_when_weights_are_given(trained: tuple[Path, Path]) -> None:
    from tests.quality.test_lpips import CHANNELS, _torchvision_alexnet_state

    checkpoint, dataset = trained
    folder = checkpoint.parent
    torch.save(_torchvision_alexnet_state(), folder / "alexnet.pth")
    torch.save({f"lin{i}.model.1.weight": torch.rand(1, c, 1, 1) for i, c in enumerate(CHANNELS)},
               folder / "alex.pth")
    result = harness.evaluate(checkpoint, dataset, "cpu", landmarks=False,
                              lpips_weights=(folder / "alexnet.pth", folder / "alex.pth"))
    for method in harness.METHODS:
        assert result["scores"][method]["full"]["lpips"] > 0
        assert result["scores"][method]["paste_back"]["lpips"] >= 0
        assert "lpips" not in result["scores"][method]["head"]


def test_syncnet_scores_every_method_against_the_held_out_audio(tmp_path: Path) -> None:
    from tests.quality.test_syncnet import EnvelopeNet

    dataset = make_synthetic_dataset(tmp_path / "data", seconds=16.0, size=32)  # 40 held out
    config = TrainConfig.from_preset("tiny", {
        "image_size": 32, "render_size": 8, "plane_resolution": 16, "plane_channels": 4,
        "hidden": 16, "feature_dim": 8, "samples_per_ray": 4, "upsampler_channels": 16,
        "audio_dim": 8, "batch_size": 2, "device": "cpu", "steps": 1, "tensorboard": False,
    })
    checkpoint = run(dataset, tmp_path / "run", config).checkpoint
    model, state = harness.load_model(checkpoint, harness.pick_device("cpu"))
    clip = harness.load_eval_clip(dataset, state, model.config)
    frames, _ = harness.render_held_out(model, clip, torch.device("cpu"))
    face = np.array([[160.0, 160.0], [352.0, 352.0]])  # landmarks in 512^2 pixels
    scores = harness.syncnet_scores(EnvelopeNet().eval(), frames, [face] * len(frames.rows),
                                    clip, dataset, state["data"]["fps"], torch.device("cpu"))
    assert set(scores) == {"real", *harness.METHODS}
    for score in scores.values():
        assert abs(score["offset_frames"]) <= 15
        assert np.isfinite(score["lse_d"]) and score["lse_c"] >= 0
