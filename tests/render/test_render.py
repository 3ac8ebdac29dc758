"""Render a tiny trained model to mp4: frame count, duration, streams, bad audio, stop."""

from __future__ import annotations

import math
from pathlib import Path

import av
import numpy as np
import pytest
import soundfile

from bench.render_colour import colour_shift, summary
from facespeech.dataset import SAMPLE_RATE
from facespeech.errors import InputError
from facespeech.hooks import Stopped
from facespeech.media import VideoWriter
from facespeech.model.camera import box_masks
from facespeech.render import RenderConfig, load, run
from facespeech.train import TrainConfig
from facespeech.train import run as train
from facespeech.train.synthetic import synthetic_voice

SMALL = {
    "image_size": 32, "render_size": 8, "plane_resolution": 16, "plane_channels": 4,
    "hidden": 16, "feature_dim": 8, "samples_per_ray": 4, "upsampler_channels": 16,
    "audio_dim": 8, "batch_size": 2, "device": "cpu", "steps": 2,
}


@pytest.fixture(scope="module")
def checkpoint(synthetic_dataset: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    run_dir = tmp_path_factory.mktemp("run")
    return train(synthetic_dataset, run_dir, TrainConfig.from_preset("tiny", SMALL)).checkpoint


def _speech(path: Path, seconds: float) -> Path:
    soundfile.write(path, synthetic_voice(seconds, seed=1), SAMPLE_RATE)
    return path


@pytest.mark.parametrize("seconds", [1.3, 2.02])
def test_video_matches_the_audio(checkpoint: Path, synthetic_dataset: Path, tmp_path: Path,
                                 seconds: float) -> None:
    out = tmp_path / "out.mp4"
    result = run(checkpoint, synthetic_dataset, _speech(tmp_path / "in.wav", seconds), out,
                 RenderConfig(batch_size=4, device="cpu"))

    assert result.frames == math.ceil(seconds * 25) and result.fps == 25
    with av.open(str(out)) as container:
        video, audio = container.streams.video[0], container.streams.audio[0]
        assert video.codec_context.name == "h264" and audio.codec_context.name == "aac"
        assert (video.width, video.height) == (32, 32)
        decoded = sum(1 for _ in container.decode(video=0))
    assert decoded == result.frames
    assert abs(decoded / 25 - seconds) <= 1 / 25


def test_rejects_short_long_and_non_audio(checkpoint: Path, synthetic_dataset: Path,
                                          tmp_path: Path) -> None:
    out = tmp_path / "out.mp4"
    with pytest.raises(InputError, match="between"):
        run(checkpoint, synthetic_dataset, _speech(tmp_path / "short.wav", 0.3), out)
    with pytest.raises(InputError, match="limit|between"):
        run(checkpoint, synthetic_dataset, _speech(tmp_path / "long.wav", 1.5), out,
            RenderConfig(max_seconds=1.0))
    text = tmp_path / "notes.wav"
    text.write_text("this is not audio at all\n" * 50)
    with pytest.raises(InputError):
        run(checkpoint, synthetic_dataset, text, out)
    assert not out.exists()


def test_stop_removes_the_partial_video(checkpoint: Path, synthetic_dataset: Path,
                                        tmp_path: Path) -> None:
    calls = iter(range(100))
    out = tmp_path / "out.mp4"
    with pytest.raises(Stopped):
        run(checkpoint, synthetic_dataset, _speech(tmp_path / "in.wav", 1.0), out,
            RenderConfig(batch_size=4, device="cpu"), should_stop=lambda: next(calls) == 2)
    assert not out.exists()


def test_transparent_background_writes_webm_with_the_person_as_alpha(
    checkpoint: Path, synthetic_dataset: Path, tmp_path: Path
) -> None:
    out = tmp_path / "out.webm"
    result = run(checkpoint, synthetic_dataset, _speech(tmp_path / "in.wav", 1.0), out,
                 RenderConfig(batch_size=4, device="cpu", background="transparent", size=256))

    with av.open(str(out)) as container:
        video, audio = container.streams.video[0], container.streams.audio[0]
        assert container.format.name.startswith("matroska,webm")
        assert video.codec_context.name == "vp9" and audio.codec_context.name == "opus"
        assert video.metadata.get("alpha_mode") == "1"
        # FFmpeg's own VP9 decoder drops the alpha plane; libvpx's keeps it
        decoder = av.CodecContext.create("libvpx-vp9", "r")
        # demux ends with an empty packet, which flushes the decoder
        frames = [f.to_ndarray(format="rgba") for p in container.demux(video)
                  for f in decoder.decode(p)]
    assert len(frames) == result.frames == 25
    alpha = frames[len(frames) // 2][..., 3]
    assert alpha[128, 128] > 200, "the face is opaque"
    assert alpha[2, 2] < 50, "the corner (background) is transparent"


def test_person_masks_come_from_the_label_maps(tmp_path: Path) -> None:
    import numpy as np
    from PIL import Image

    from facespeech.dataset import LABEL_BACKGROUND, LABEL_FACE, LABEL_NECK_TORSO, semantic_path
    from facespeech.train.data import load_person_masks

    assert load_person_masks(tmp_path, "p", [1], 8) is None  # no label maps: None
    labels = np.full((16, 16), LABEL_BACKGROUND, np.uint8)
    labels[4:12, 4:12] = LABEL_FACE
    labels[12:, 2:14] = LABEL_NECK_TORSO
    path = semantic_path(tmp_path, "p", 1)
    path.parent.mkdir(parents=True)
    Image.fromarray(labels).save(path)

    person = load_person_masks(tmp_path, "p", [1, 2], 16)
    assert person is not None and person.shape == (2, 1, 16, 16)
    assert person[0, 0, 8, 8] == 255 and person[0, 0, 14, 8] == 255 and person[0, 0, 0, 0] == 0
    assert (person[1] == person[0]).all()  # frame 2 has no map: frame 1's


def test_a_motion_model_renders_its_smoothed_motion_sequence(
        synthetic_dataset: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The motion of every frame is predicted once, as one sequence (where the smoothing over
    time is), and the video still has a frame per 40 ms of audio."""
    from facespeech.model import TalkingHead
    from facespeech.render import render

    config = TrainConfig.from_preset("tiny", {**SMALL, "use_motion": True, "motion_steps": 5,
                                              "motion_regressors": 2, "motion_smoothing": 2.0})
    model_file = train(synthetic_dataset, tmp_path / "run", config).checkpoint
    asked: list[int] = []
    sequence = TalkingHead.motion_sequence

    def spy(self: TalkingHead, audio_of, frames, batch: int = 512):  # type: ignore[no-untyped-def]
        asked.append(len(frames))
        return sequence(self, audio_of, frames, batch)

    predicted: list[int] = []
    predict = TalkingHead.predict_motion

    def count(self: TalkingHead, audio):  # type: ignore[no-untyped-def]
        predicted.append(len(audio))
        return predict(self, audio)

    monkeypatch.setattr(TalkingHead, "motion_sequence", spy)
    monkeypatch.setattr(TalkingHead, "predict_motion", count)
    renderer = render.load(model_file, synthetic_dataset, device="cpu")
    assert renderer.config.motion_smoothing == 2.0 and len(renderer.model.regressors) == 2
    result = renderer.render(_speech(tmp_path / "in.wav", 1.3), tmp_path / "out.mp4",
                             RenderConfig(batch_size=4, device="cpu"))
    assert asked == [result.frames] == [math.ceil(1.3 * 25)]
    assert predicted == [result.frames]  # the batches render the sequence's codes


def _write_video(path: Path, frames: np.ndarray) -> Path:
    with VideoWriter(path, 25, frames.shape[2], frames.shape[1], crf=1) as writer:
        for frame in frames:
            writer.write(frame)
    return path


def test_colour_shift_compares_the_box_with_the_frame_underneath(
    checkpoint: Path, synthetic_dataset: Path, tmp_path: Path
) -> None:
    """bench.render_colour: the reference walk itself shifts nothing; the same video with the
    hidden box 30 levels brighter (less where 255 clips it) shifts by what was added."""
    renderer = load(checkpoint, synthetic_dataset, device="cpu")
    rows = renderer.reference_walk(30, RenderConfig())
    walk = renderer.reference.images[rows].permute(0, 2, 3, 1).numpy()
    size = walk.shape[1]
    boxes = box_masks(renderer.reference.mouth[rows].float(), size)[:, 0].numpy() > 0.5
    brighter = walk.astype(np.int16)
    brighter[boxes] += 30
    brighter = np.clip(brighter, 0, 255).astype(np.uint8)

    same, real = colour_shift(checkpoint, _write_video(tmp_path / "same.mp4", walk),
                              synthetic_dataset)
    shifted, _ = colour_shift(checkpoint, _write_video(tmp_path / "bright.mp4", brighter),
                              synthetic_dataset)

    assert summary(same, 8.0)["median"] < 3.0
    added = np.stack([(b[m].astype(float) - w[m]).mean(0)
                      for b, w, m in zip(brighter, walk, boxes, strict=True)])
    assert added.mean() > 20
    assert np.abs(shifted - added).mean() < 3.0
    assert summary(shifted, 8.0)["share_over_threshold"] == 1.0
    assert real.shape == same.shape == (30, 3)
