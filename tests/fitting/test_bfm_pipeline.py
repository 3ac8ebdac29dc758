"""The pipeline's 3DMM stage on a small synthetic track: the crops it hands the photometric
fit (CPU) and the whole stage with nvdiffrast (GPU)."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
import scipy.io

from facespeech import dataset
from facespeech.errors import InputError
from facespeech.hooks import never_stop, no_progress
from facespeech.preprocess import pipeline
from facespeech.preprocess.bfm import MEDIAPIPE_68, load_bfm
from facespeech.preprocess.config import PreprocessConfig
from tests.fitting.bfm_file import write_model

SIZE = 256


def _synthetic_track(root: Path, model_path: Path, frames: int = 4) -> dataset.PersonTrack:
    """Grey crops with a skin-coloured disc where the model's face is, and FaceMesh-shaped
    3D landmarks whose 68 mapped points are the model's keypoints."""
    model = load_bfm(model_path)
    keypoints = model.mean_shape[model.keypoints, :2] * [0.8, -0.8] + [SIZE / 2, SIZE / 2]
    landmarks_3d = np.zeros((frames, 478, 3), np.float32)
    landmarks_3d[:, MEDIAPIPE_68, :2] = keypoints
    poses = []
    for frame in range(1, frames + 1):
        image = np.full((SIZE, SIZE, 3), 90, np.uint8)
        cv2.circle(image, (SIZE // 2, SIZE // 2), 70, (120, 150, 200), -1)  # BGR skin
        path = dataset.image_path(root, "p0", frame)
        path.parent.mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(path), image)
        poses.append(dataset.FramePose(frame, np.eye(3).tolist(), [0, 0, 1], SIZE, [0, 0, SIZE]))
    expressions = [dataset.FrameExpression(p.frame, 0.0, 0.0) for p in poses]
    return dataset.PersonTrack("p0", "clip", poses, expressions, landmarks_3d[..., :2],
                               [1, 2, 3], [4], landmarks_3d=landmarks_3d)


def _job(root: Path, model_path: Path) -> pipeline._Run:
    config = PreprocessConfig(image_size=SIZE, bfm_model=str(model_path))
    return pipeline._Run(Path("clip.mp4"), root, config, no_progress, never_stop)


def test_the_photometric_fit_gets_rgb_crops_scaled_down(tmp_path: Path) -> None:
    model_path = write_model(tmp_path / "BFM09_model_info.mat")
    track = _synthetic_track(tmp_path, model_path)
    crops = pipeline._crops_for_fit(_job(tmp_path, model_path), track, 64)
    assert crops.shape == (4, 64, 64, 3) and crops.dtype == np.uint8
    assert crops[0, 32, 32].tolist() == pytest.approx([200, 150, 120], abs=3)  # RGB, not BGR
    assert crops[0, 2, 2].tolist() == pytest.approx([90, 90, 90], abs=3)


@pytest.mark.gpu
def test_the_pipeline_stage_fits_with_nvdiffrast_on_the_gpu(tmp_path: Path) -> None:
    model_path = write_model(tmp_path / "BFM09_model_info.mat")
    track = _synthetic_track(tmp_path, model_path)
    job = _job(tmp_path, model_path)
    pipeline._fit_bfm(job, track)
    dataset.write_metadata(tmp_path, dataset.DatasetInfo(25, SIZE, ["p0"], {"p0": "clip"}),
                           [track])  # as the pipeline does after the fit
    assert job.checks[-1].name == "bfm_fit" and "nvdiffrast" in job.checks[-1].detail
    with np.load(dataset.bfm_path(tmp_path, "p0")) as saved:
        assert saved["lighting"].shape == (4, 9, 3) and np.isfinite(saved["lighting"]).all()
        assert saved["frames"].tolist() == [1, 2, 3, 4]
    (written,) = dataset.read_tracks(tmp_path)
    assert [len(e.bfm or []) for e in written.expressions] == [6] * 4


@pytest.mark.parametrize("content", [None, b"not a mat file", "wrong keys"])
def test_a_missing_or_broken_model_file_fails_the_stage_with_a_reason(
    tmp_path: Path, content: bytes | str | None
) -> None:
    good = write_model(tmp_path / "good.mat")
    track = _synthetic_track(tmp_path, good)
    broken = tmp_path / "BFM09_model_info.mat"
    if isinstance(content, bytes):
        broken.write_bytes(content)
    elif content == "wrong keys":
        scipy.io.savemat(broken, {"meanshape": np.zeros((1, 3))})
    job = _job(tmp_path, broken)
    with pytest.raises(InputError) as failure:
        pipeline._fit_bfm(job, track)
    assert job.checks[-1].name == "bfm_model" and job.checks[-1].status == "fail"
    assert "BFM09" in str(failure.value) or "mat" in str(failure.value)
    assert not dataset.bfm_path(tmp_path, "p0").exists()
