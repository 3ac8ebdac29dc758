"""nvdiffrast's import fix (preprocess.raster) on the CPU, and rasterisation on the GPU."""

from __future__ import annotations

import importlib
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from facespeech.preprocess import raster
from facespeech.preprocess.bfm import FitConfig, fit_3dmm, load_bfm
from tests.fitting.bfm_file import write_model as _write_model


def test_the_plugin_nvdiffrast_builds_is_importable(tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """nvdiffrast builds its plugin into torch's extension folder and then imports it by
    name: a module placed where torch would build it must be found after load_nvdiffrast."""
    pytest.importorskip("nvdiffrast")
    from torch.utils import cpp_extension

    monkeypatch.setenv("TORCH_EXTENSIONS_DIR", str(tmp_path))
    monkeypatch.setattr(sys, "path", list(sys.path))
    dr = raster.load_nvdiffrast()
    ops = importlib.import_module("nvdiffrast.torch.ops")
    built = []

    def fake_build(name: str, **_: object) -> None:  # stands in for nvcc: a module on disk
        folder = Path(cpp_extension._get_build_directory(name, False))
        (folder / f"{name}.py").write_text("BUILT = True\n")
        built.append(name)

    def not_built_yet(*_: object) -> None:
        raise ImportError("not built")

    monkeypatch.setattr(cpp_extension, "_import_module_from_library", not_built_yet)
    monkeypatch.setattr(cpp_extension, "load", fake_build)
    monkeypatch.setattr(ops, "_cached_plugin", {})
    # the real plugin may be loaded already (GPU tests in the same run): set it aside
    monkeypatch.delitem(sys.modules, raster.plugin_name(), raising=False)
    try:
        plugin = ops._get_plugin()
    finally:
        sys.modules.pop(raster.plugin_name(), None)
    assert built == [raster.plugin_name()] and plugin.BUILT
    assert dr.RasterizeCudaContext is not None


def test_rasteriser_is_refused_without_cuda(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(raster.RasterUnavailable, match="CUDA"):
        raster.cuda_rasterizer()
    assert raster.pixels_to_clip(torch.tensor([[[0.0, 63.0, 1.0]]]), 64, 64)[0, 0, :2].tolist(
        ) == pytest.approx([-1 + 1 / 64, 1 - 1 / 64])


@pytest.mark.gpu
def test_a_square_rasterises_where_its_pixels_are() -> None:
    dr, context = raster.cuda_rasterizer()
    corners = torch.tensor([[[8.0, 16.0, 0.0], [40.0, 16.0, 0.0], [40.0, 48.0, 1.0],
                             [8.0, 48.0, 1.0]]], device="cuda")
    triangles = torch.tensor([[0, 1, 2], [0, 2, 3]], device="cuda")
    colours = torch.tensor([[[1.0, 0, 0], [1.0, 0, 0], [0, 0, 1.0], [0, 0, 1.0]]], device="cuda")
    image, covered = raster.render_vertex_colours(dr, context, corners, triangles, colours, 64, 64)
    mask = covered[0, ..., 0].cpu().numpy()
    rows, cols = np.nonzero(mask)
    assert (rows.min(), rows.max(), cols.min(), cols.max()) == (16, 47, 8, 39)
    assert image[0, 17, 20, 0] > 0.9 and image[0, 47, 20, 2] > 0.9  # top red, bottom blue


@pytest.mark.gpu
def test_the_gpu_fit_rasterises_and_lowers_the_photometric_error(tmp_path: Path) -> None:
    model = load_bfm(_write_model(tmp_path / "BFM09_model_info.mat"))
    landmarks = model.mean_shape[None, model.keypoints, :2] * [0.8, -0.8] + [128.0, 128.0]
    frames = np.full((4, 256, 256, 3), 120, np.uint8)
    quick = FitConfig(iterations=100, identity_iterations=1, photo_iterations=1, batch_frames=2)
    short = fit_3dmm(model, np.repeat(landmarks, 4, 0), frames, quick, device="cuda")
    longer = fit_3dmm(model, np.repeat(landmarks, 4, 0), frames,
                      FitConfig(iterations=100, photo_iterations=40, batch_frames=2),
                      device="cuda")
    assert short.renderer == longer.renderer == "nvdiffrast"
    assert longer.photometric_error is not None and short.photometric_error is not None
    assert longer.photometric_error < 0.5 * short.photometric_error
