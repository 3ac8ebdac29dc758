"""What a run writes beyond the images: masks, label maps, plate, 3D landmarks, report."""

from __future__ import annotations

import json
import shutil
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from facespeech import dataset
from facespeech.hooks import Stopped
from facespeech.preprocess import run
from facespeech.preprocess.report import CONTACT_SHEET_NAME, REPORT_NAME
from facespeech.preprocess.stream import WORK_DIR
from tests.conftest import shared_file
from tests.preprocess.conftest import SMALL, aoc_frames_and_audio, write_video


def test_label_maps_have_face_mouth_and_torso(aoc_run: tuple) -> None:
    root = aoc_run[0]
    (track,) = dataset.read_tracks(root)
    labels = np.array(Image.open(dataset.semantic_path(root, "p0", track.poses[50].frame)))
    assert labels.shape == (128, 128)
    shares = {label: float(np.mean(labels == label)) for label in range(5)}
    assert shares[dataset.LABEL_FACE] > 0.15 and shares[dataset.LABEL_MOUTH] > 0.005
    assert shares[dataset.LABEL_NECK_TORSO] > 0.02 and shares[dataset.LABEL_BACKGROUND] > 0.05
    # The mouth label sits inside the lower half of the face, the torso below it.
    rows = np.nonzero(labels == dataset.LABEL_MOUTH)[0].mean()
    torso_rows = np.nonzero(labels == dataset.LABEL_NECK_TORSO)[0].mean()
    assert 64 < rows < torso_rows


def test_background_plate_is_the_whole_frame(aoc_run: tuple) -> None:
    with Image.open(dataset.background_path(aoc_run[0])) as plate:
        assert plate.size == (512, 512)  # the source video's size (under check_max_side)


def test_landmarks_3d_and_report_files(aoc_run: tuple) -> None:
    root, report = aoc_run[:2]
    (track,) = dataset.read_tracks(root)
    landmarks_3d = dataset.read_landmarks_3d(root, "p0")
    assert landmarks_3d is not None and landmarks_3d.shape == (len(track.poses), 478, 3)
    assert np.allclose(landmarks_3d[0, :, :2], track.landmarks[0], atol=0.011)
    saved = json.loads((root / REPORT_NAME).read_text())
    assert saved["frames"] == report.frames == 200
    assert {c["name"] for c in saved["checks"]} >= {
        "frame_rate", "audio", "av_length", "single_face", "face_size", "usable_length"}
    assert any(c["name"] == "usable_length" and c["status"] == "warn" for c in saved["checks"])
    assert set(report.files) == {REPORT_NAME, CONTACT_SHEET_NAME, "background.jpg"}
    with Image.open(root / CONTACT_SHEET_NAME) as sheet:
        assert sheet.size == (1024, 768)  # 12 tiles of 256, four to a row
    assert 0 < report.landmark_jitter["smoothed"] < report.landmark_jitter["raw"]
    assert not (root / WORK_DIR).exists()


def test_a_stopped_run_resumes_from_its_last_chunk(aoc_run: tuple, tmp_path: Path) -> None:
    video = shared_file("video/hdtf_aoc_8s.mp4")
    config = replace(SMALL, checkpoint_frames=50, chunk_frames=32)
    calls = iter(range(1000))
    with pytest.raises(Stopped):  # stops at frame 160: chunks 0-49 and 50-99 are saved
        run(video, tmp_path, config, should_stop=lambda: next(calls) >= 5)
    assert (tmp_path / WORK_DIR / "chunk_00001.npz").is_file()
    report = run(video, tmp_path, config)
    assert report.resumed_from_frame in (100, 150)
    assert report.frames == 200
    (track,) = dataset.read_tracks(tmp_path)
    (fresh,) = dataset.read_tracks(aoc_run[0])
    boxes = np.array([p.crop_box for p in track.poses])
    fresh_boxes = np.array([p.crop_box for p in fresh.poses])
    assert np.abs(boxes - fresh_boxes).max() < 0.02 * fresh_boxes[:, 2].mean()
    assert all(dataset.image_path(tmp_path, "p0", p.frame).is_file() for p in track.poses)


def test_face_masks_read_back_as_0_and_255(aoc_run: tuple) -> None:
    root = aoc_run[0]
    (track,) = dataset.read_tracks(root)
    with Image.open(dataset.mask_path(root, "p0", track.poses[0].frame)) as mask:
        grey = np.array(mask.convert("L"))  # as training and rendering read them
    assert set(np.unique(grey)) == {0, 255} and 0.2 < (grey > 0).mean() < 0.8


def test_a_second_person_is_added_beside_the_first(aoc_run: tuple, tmp_path: Path) -> None:
    root = tmp_path / "two"
    shutil.copytree(aoc_run[0], root)
    frames, audio = aoc_frames_and_audio(5.0)
    video = write_video(tmp_path / "guest.mp4", frames, audio)
    run(video, root, replace(SMALL, person="guest", clip="talk"))
    info = dataset.read_info(root)
    assert info.persons == ["p0", "guest"] and info.clips == {"p0": "clip", "guest": "talk"}
    first, second = dataset.read_tracks(root)
    assert len(first.poses) == 200 and len(second.poses) == 125
    assert dataset.image_path(root, "p0", 200).is_file()
    assert dataset.image_path(root, "guest", 125).is_file()
    assert dataset.audio_path(root, "guest", "talk").is_file()
