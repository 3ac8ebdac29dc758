"""What a render looks like: options, a model file alone, pauses, loop points, colours, audio."""

from __future__ import annotations

import math
from pathlib import Path

import av
import numpy as np
import pytest
import soundfile
import torch

from facespeech.dataset import SAMPLE_RATE
from facespeech.errors import InputError
from facespeech.preprocess.audio_features import frame_windows, log_mel, normalise_loudness
from facespeech.render import RenderConfig, RendererCache, embed, load, run
from facespeech.render import features as render_features
from facespeech.render.encode import rgb_to_yuv420p
from facespeech.render.features import MelWindows, silence_mel, speech_mel
from facespeech.train import TrainConfig
from facespeech.train import run as train
from facespeech.train.data import neighbour_windows
from facespeech.train.synthetic import synthetic_voice
from tests.render.test_render import SMALL


@pytest.fixture(scope="module")
def model_file(synthetic_dataset: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 2-step model with its reference frames embedded: renders without the dataset."""
    run_dir = tmp_path_factory.mktemp("run")
    path = train(synthetic_dataset, run_dir, TrainConfig.from_preset("tiny", SMALL)).checkpoint
    embed(path, synthetic_dataset)
    return path


def _wav(path: Path, wave: np.ndarray, rate: int = SAMPLE_RATE) -> Path:
    soundfile.write(path, wave, rate)
    return path


def _frames(video: Path) -> np.ndarray:
    with av.open(str(video)) as container:
        return np.stack([f.to_ndarray(format="rgb24") for f in container.decode(video=0)])


def test_options_shape_the_video(model_file: Path, tmp_path: Path) -> None:
    out = tmp_path / "out.mp4"
    speech = _wav(tmp_path / "s.wav", synthetic_voice(1.2, seed=1))
    config = RenderConfig(size=256, fps=30, background="green", motion="still", blink_rate=30,
                          device="cpu")
    result = run(model_file, None, speech, out, config)  # no dataset: the model file suffices
    frames = _frames(out)
    assert result.frames == len(frames) == math.ceil(1.2 * 30)
    assert frames.shape[1:] == (256, 256, 3)
    corner = frames[:, :8, :8].reshape(-1, 3).mean(axis=0)
    assert np.abs(corner - [0, 177, 64]).max() < 12  # chroma-key green outside the face


def test_a_model_without_reference_frames_needs_its_dataset(
    synthetic_dataset: Path, tmp_path: Path
) -> None:
    bare = train(synthetic_dataset, tmp_path / "run", TrainConfig.from_preset("tiny", SMALL))
    speech = _wav(tmp_path / "s.wav", synthetic_voice(1.0, seed=1))
    with pytest.raises(InputError, match="give the dataset"):
        run(bare.checkpoint, None, speech, tmp_path / "out.mp4")
    result = run(bare.checkpoint, synthetic_dataset, speech, tmp_path / "out.mp4",
                 RenderConfig(device="cpu"))
    assert result.frames == 25


def test_mouth_holds_still_in_pauses(model_file: Path) -> None:
    """Every frame of a pause gets the same audio input (the trained silence), so with a still
    pose the rendered face is identical across the pause and differs while speaking."""
    renderer = load(model_file, device="cpu")
    speech = synthetic_voice(1.0, seed=2)
    noise = np.random.default_rng(0).normal(0, 3e-4, SAMPLE_RATE).astype(np.float32)
    wave = np.concatenate([speech, noise, speech])  # room noise, -70 dBFS, between words
    mel = speech_mel(wave, renderer.pause)
    windows = MelWindows(mel, renderer.pause, 75, 25, renderer.data["audio_mean"],
                         renderer.data["audio_std"], renderer.config.audio_window,
                         renderer.config.audio_neighbours, renderer.device)
    config = RenderConfig(motion="still", device="cpu")
    frames = torch.arange(75)
    rows = renderer.reference_walk(75, config)
    with torch.inference_mode():
        video = renderer.composite(frames, rows[frames], renderer._blinks(75, rows, config)[frames],
                                   windows, renderer._masks(config), config)
    steps = (video[1:] - video[:-1]).abs().amax(dim=(1, 2, 3))
    pause = steps[31:43]  # 1.25-1.75 s: the audio windows (±0.16 s) see only the pause
    speaking = steps[5:20]
    assert pause.max() == 0
    assert speaking.max() > 0


def test_no_jump_where_the_reference_walk_turns(model_file: Path) -> None:
    renderer = load(model_file, device="cpu")
    n = 3 * len(renderer.reference)
    config = RenderConfig(device="cpu")
    wave = synthetic_voice(n / 25, seed=3)
    windows = MelWindows(speech_mel(wave, renderer.pause), renderer.pause, n, 25,
                         renderer.data["audio_mean"], renderer.data["audio_std"],
                         renderer.config.audio_window, renderer.config.audio_neighbours,
                         renderer.device)
    rows = renderer.reference_walk(n, config)
    frames = torch.arange(n)
    with torch.inference_mode():
        video = torch.cat([
            renderer.composite(part, rows[part], renderer._blinks(n, rows, config)[part],
                               windows, renderer._masks(config), config)
            for part in frames.split(16)
        ])
    steps = (video[1:] - video[:-1]).abs().mean(dim=(1, 2, 3))
    turns = torch.arange(len(renderer.reference) - 1, n - 1, len(renderer.reference) - 1)
    elsewhere = torch.ones(n - 1, dtype=torch.bool)
    elsewhere[turns - 1] = elsewhere[turns] = False
    assert steps[turns - 1].max() <= 1.5 * steps[elsewhere].max()
    assert steps[turns].max() <= 1.5 * steps[elsewhere].max()


def test_chunked_features_equal_the_whole_file(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(render_features, "CHUNK_SECONDS", 1.3)
    wave = synthetic_voice(5.0, seed=4)
    pause = silence_mel(None)
    mel = speech_mel(wave, pause)
    whole = log_mel(normalise_loudness(wave))
    spoken = ~(mel == pause).all(axis=1)
    assert spoken.mean() > 0.3
    np.testing.assert_allclose(mel[spoken], whole[spoken], atol=1e-4)
    n = 125
    windows = MelWindows(mel, pause, n, 25, 0.0, 1.0, 16, 8, torch.device("cpu"))
    index = torch.tensor([0, 1, 7, 60, n - 2, n - 1])
    expected = neighbour_windows(torch.from_numpy(frame_windows(mel, n)), index, 8)
    torch.testing.assert_close(windows(index), expected)


def test_silent_audio_is_refused_and_odd_audio_renders(model_file: Path, tmp_path: Path
                                                       ) -> None:
    out = tmp_path / "out.mp4"
    with pytest.raises(InputError, match="silent"):
        run(model_file, None, _wav(tmp_path / "silence.wav", np.zeros(SAMPLE_RATE)), out)
    assert not out.exists()
    speech = synthetic_voice(1.0, seed=5)
    for name, wave, rate in [
        ("clipped.wav", np.clip(speech * 30, -1, 1), SAMPLE_RATE),
        ("8k.wav", speech[::2], 8000),
        ("48k-stereo.wav", np.repeat(np.repeat(speech, 3)[:, None], 2, axis=1), 48_000),
    ]:
        result = run(model_file, None, _wav(tmp_path / name, wave, rate), out,
                     RenderConfig(device="cpu"))
        assert result.frames == 25, name


def test_gpu_colour_conversion_matches_the_encoder_library() -> None:
    # flat colours: the libraries may filter chroma differently, never the colour itself
    colours = torch.rand(6, 3, 1, 1)
    ours = rgb_to_yuv420p(colours.expand(-1, -1, 16, 16).contiguous()).numpy().astype(int)
    for colour, planes in zip(colours, ours, strict=True):
        pixels = np.broadcast_to(
            (colour.flatten() * 255 + 0.5).clamp(0, 255).to(torch.uint8).numpy(), (16, 16, 3))
        frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(pixels), format="rgb24")
        theirs = frame.reformat(format="yuv420p").to_ndarray().astype(int)
        assert np.abs(planes - theirs).max() <= 2


def test_cache_keeps_the_most_recent_models(model_file: Path) -> None:
    cache = RendererCache(max_models=2, max_bytes=2**40)
    loads: list[str] = []

    def loader(name: str):  # type: ignore[no-untyped-def]
        def load_one():  # type: ignore[no-untyped-def]
            loads.append(name)
            return load(model_file, device="cpu")
        return load_one

    for name in ("a", "b", "a", "c", "a", "b"):
        cache.get(name, loader(name))
    assert loads == ["a", "b", "c", "b"] and len(cache) == 2
    small = RendererCache(max_models=5, max_bytes=1)  # over memory: only the newest stays
    small.get("a", loader("a"))
    small.get("b", loader("b"))
    assert len(small) == 1
