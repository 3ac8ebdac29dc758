"""BFM09_model_info.mat loading and the 3DMM fit, on a small synthetic model the test writes."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import scipy.io
import torch

from facespeech import dataset
from facespeech.hooks import never_stop, no_progress
from facespeech.preprocess import pipeline
from facespeech.preprocess.bfm import FitConfig, fit_3dmm, load_bfm, rodrigues
from tests.fitting.bfm_file import write_model as _write_model
from tests.preprocess.conftest import SMALL


def test_loader_reads_the_file_and_checks_it(tmp_path: Path) -> None:
    model = load_bfm(_write_model(tmp_path / "BFM09_model_info.mat"))
    assert model.mean_shape.shape == (144, 3) and model.id_base.shape == (432, 10)
    assert model.triangles.min() == 0 and len(model.keypoints) == 68
    scipy.io.savemat(tmp_path / "bad.mat", {"meanshape": np.zeros((1, 3))})
    with pytest.raises(ValueError, match="idBase"):
        load_bfm(tmp_path / "bad.mat")


def test_fit_recovers_the_landmarks_of_a_known_face(tmp_path: Path) -> None:
    model = load_bfm(_write_model(tmp_path / "BFM09_model_info.mat"))
    rng = np.random.default_rng(1)
    frames = 3
    identity, expression = rng.normal(size=10), rng.normal(size=(frames, 6))
    angles = torch.tensor(rng.normal(scale=0.15, size=(frames, 3)), dtype=torch.float32)
    rotation = rodrigues(angles).numpy()
    shapes = model.mean_shape + (model.id_base @ identity).reshape(-1, 3) + np.einsum(
        "ij,nj->ni", model.exp_base, expression).reshape(frames, -1, 3)
    rotated = np.einsum("nvj,nij->nvi", shapes, rotation)
    landmarks = rotated[:, model.keypoints, :2] * [0.8, -0.8] + [128.0, 128.0]
    fit = fit_3dmm(model, landmarks, config=FitConfig(iterations=200, lr=0.05))
    assert fit.landmark_rmse_px < 2.0  # of a face ~160 px wide
    assert fit.expression.shape == (frames, 6) and fit.lighting.shape == (frames, 9, 3)


def test_photometric_term_fits_the_lighting(tmp_path: Path) -> None:
    model = load_bfm(_write_model(tmp_path / "BFM09_model_info.mat"))
    landmarks = model.mean_shape[None, model.keypoints, :2] * [0.8, -0.8] + [128.0, 128.0]
    frame = np.full((1, 256, 256, 3), 120, np.uint8)
    quick = FitConfig(iterations=30, identity_iterations=1, photo_iterations=1)
    short = fit_3dmm(model, landmarks, frame, quick)
    longer = fit_3dmm(model, landmarks, frame, replace(quick, photo_iterations=30))
    assert short.photometric_error is not None and longer.photometric_error is not None
    assert longer.photometric_error < 0.5 * short.photometric_error
    assert np.isfinite(longer.lighting).all() and longer.renderer == "vertices"


def test_fitted_mesh_and_keypoints_agree(tmp_path: Path) -> None:
    """vertices_px (the mesh an overlay draws) is the same pose as the keypoints fitted."""
    model = load_bfm(_write_model(tmp_path / "BFM09_model_info.mat"))
    landmarks = model.mean_shape[None, model.keypoints, :2] * [0.7, -0.7] + [120.0, 130.0]
    frames = np.full((2, 256, 256, 3), 120, np.uint8)
    fit = fit_3dmm(model, np.repeat(landmarks, 2, 0), frames,
                   FitConfig(iterations=50, identity_iterations=3, photo_iterations=3,
                             batch_frames=1, photo_size=64))
    mesh = fit.vertices_px(model, 1)
    assert mesh.shape == (len(model.mean_shape), 3)
    np.testing.assert_allclose(mesh[model.keypoints], fit.keypoints_px[1], atol=1e-2)
    assert fit.landmark_rmse_px < 3.0


def test_pipeline_stores_bfm_coefficients_per_frame(aoc_run: tuple, tmp_path: Path) -> None:
    root = aoc_run[0]
    (track,) = dataset.read_tracks(root)
    track.poses = track.poses[:25]  # a second of frames is enough to check the plumbing
    track.expressions = track.expressions[:25]
    landmarks_3d = dataset.read_landmarks_3d(root, "p0")
    assert landmarks_3d is not None
    track.landmarks_3d = landmarks_3d[:25]
    config = replace(SMALL, bfm_model=str(_write_model(tmp_path / "BFM09_model_info.mat")))
    job = pipeline._Run(Path("clip.mp4"), tmp_path, config, no_progress, never_stop)
    pipeline._fit_bfm(job, track)
    dataset.write_metadata(tmp_path, dataset.read_info(root), [track])  # as the pipeline does
    with np.load(dataset.bfm_path(tmp_path, "p0")) as saved:
        assert saved["expression"].shape == (25, 6) and saved["identity"].shape == (10,)
        assert saved["frames"].tolist() == [p.frame for p in track.poses]
    assert job.checks[-1].name == "bfm_fit"
    # the coefficients join the expression codes in expressions.json
    written = dataset.read_tracks(tmp_path)[0].expressions
    assert len(written) == 25 and all(len(e.bfm or []) == 6 for e in written)
    assert written[3].code == track.expressions[3].code
