"""preprocess.run on real clips: the layout it writes, and what it makes of them."""

from __future__ import annotations

import json
from pathlib import Path

import mediapipe as mp
import numpy as np
import pytest
from PIL import Image

from facespeech import dataset
from facespeech.hooks import Stopped
from facespeech.media import probe
from facespeech.preprocess import run
from tests.conftest import shared_file
from tests.preprocess.conftest import SMALL


def _check_layout(root: Path, video: Path) -> dataset.PersonTrack:
    info = dataset.read_info(root)
    assert info.persons == ["p0"] and info.image_size == 128 and info.fps == 25
    (track,) = dataset.read_tracks(root)
    expected = round(probe(video).duration_s * 25)
    assert abs(len(track.poses) + len(info.dropped_frames["p0"]) - expected) <= 1
    for pose in track.poses:
        assert dataset.image_path(root, "p0", pose.frame).is_file()
        assert dataset.mask_path(root, "p0", pose.frame).is_file()
    with Image.open(dataset.image_path(root, "p0", track.poses[0].frame)) as image:
        assert image.size == (128, 128)
    assert len(track.expressions) == len(track.landmarks) == len(track.poses)
    assert np.array(track.landmarks[0]).shape == (478, 2)
    assert len(track.expressions[0].code) == 16
    assert dataset.audio_path(root, "p0", "clip").is_file()
    return track


def _face_centre_in_crop(root: Path, frame: int) -> np.ndarray | None:
    image = np.array(Image.open(dataset.image_path(root, "p0", frame)))
    with mp.solutions.face_mesh.FaceMesh(static_image_mode=True) as mesh:
        result = mesh.process(image)
    if not result.multi_face_landmarks:
        return None
    points = np.array([(p.x, p.y) for p in result.multi_face_landmarks[0].landmark])
    return points.mean(axis=0)


def _rotation_steps_degrees(track: dataset.PersonTrack) -> np.ndarray:
    rotations = np.array([p.rotation for p in track.poses])
    relative = np.einsum("nij,nkj->nik", rotations[1:], rotations[:-1])
    cosines = np.clip((np.trace(relative, axis1=1, axis2=2) - 1) / 2, -1, 1)
    return np.degrees(np.arccos(cosines))


@pytest.mark.parametrize("fixture", ["aoc_run", "obama_run"])
def test_real_clip_gives_a_complete_dataset(fixture: str, request: pytest.FixtureRequest) -> None:
    root, report = request.getfixturevalue(fixture)[:2]
    video = shared_file(
        "video/hdtf_aoc_8s.mp4" if fixture == "aoc_run" else "video/obama_weekly_address_34s.mp4"
    )
    track = _check_layout(root, video)
    assert report.frames == len(track.poses)
    assert report.face_size_px > 150

    # The crops show a face near their centre.
    for pose in track.poses[:: max(1, len(track.poses) // 4)]:
        centre = _face_centre_in_crop(root, pose.frame)
        assert centre is not None, f"no face in crop of frame {pose.frame}"
        assert np.all(np.abs(centre - 0.5) < 0.15)

    # Poses move smoothly (a talking head turns a few degrees per frame at most).
    steps = _rotation_steps_degrees(track)
    assert np.median(steps) < 1.5 and steps.max() < 10
    boxes = np.array([p.crop_box for p in track.poses])
    assert np.abs(np.diff(boxes[:, 2])).max() < 0.02 * boxes[:, 2].mean()

    # The last 10 % of frames are held out.
    numbers = [p.frame for p in track.poses]
    assert track.held_out_frames == numbers[-len(track.held_out_frames):]
    assert abs(len(track.held_out_frames) - 0.1 * len(numbers)) <= 1
    assert not set(track.held_out_frames) & set(track.train_frames)

    # 100 log-mel frames per second, 80 mels, float16 on disk.
    features = np.load(dataset.features_path(root, "p0", "clip"))
    assert features.dtype == np.float16 and features.shape[1] == 80
    assert abs(features.shape[0] - report.duration_s * 100) <= 10


def test_mouth_and_blink_codes_vary(aoc_run: tuple) -> None:
    (track,) = dataset.read_tracks(aoc_run[0])
    mouth = np.array([e.mouth_open for e in track.expressions])
    blink = np.array([e.blink for e in track.expressions])
    assert mouth.max() > 3 * max(np.percentile(mouth, 10), 1e-3)  # she talks
    assert 0 <= blink.min() and blink.max() <= 1
    lips = np.array([e.lips for e in track.expressions])
    assert lips.shape == (len(track.expressions), 8)
    # the lip code is the shape besides the opening: no linear trace of it is left
    assert abs(np.corrcoef(lips[:, 0], mouth)[0, 1]) < 0.1
    assert np.allclose(lips.std(axis=0, ddof=1), 1.0, atol=0.01)


def test_progress_runs_through_the_stages(aoc_run: tuple) -> None:
    progress = aoc_run[2]
    stages = list(dict.fromkeys(p.stage for p in progress))
    assert stages == ["decode", "track", "audio", "write", "report"]
    fractions = [p.fraction for p in progress]
    assert fractions == sorted(fractions) and fractions[-1] == 1.0
    info = json.loads((aoc_run[0] / "metadata" / "info.json").read_text())
    assert info["dropped_frames"] == {"p0": []}


def test_should_stop_raises_stopped(tmp_path: Path) -> None:
    video = shared_file("video/hdtf_aoc_8s.mp4")
    calls = iter(range(1000))
    with pytest.raises(Stopped):
        run(video, tmp_path, SMALL, should_stop=lambda: next(calls) >= 2)
