"""The generated sample is a usable talking head: it preprocesses, and its mouth follows sound."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from facespeech import dataset
from facespeech.media import load_audio, probe
from facespeech.preprocess import run
from facespeech.sample import make_sample, mouth_envelope
from tests.preprocess.conftest import SMALL


def test_sample_preprocesses_and_mouth_follows_audio(tmp_path: Path) -> None:
    video, speech = make_sample(tmp_path / "sample", seconds=8.0)
    info = probe(video)
    assert (info.width, info.height, info.fps) == (512, 512, 25.0) and info.has_audio
    assert probe(speech).has_audio and not probe(speech).has_video

    report = run(video, tmp_path / "dataset", SMALL)
    assert report.frames == 200 and not report.dropped_frames

    (track,) = dataset.read_tracks(tmp_path / "dataset")
    envelope = mouth_envelope(load_audio(video), report.frames)
    mouth = np.array([e.mouth_open for e in track.expressions])
    assert np.corrcoef(mouth, envelope)[0, 1] > 0.5
    assert envelope.min() < 0.05  # the speech has pauses
