"""nvdiffrast (the `diffrp-nvdiffrast` package), imported so that its JIT-built plugin is found.

nvdiffrast compiles its CUDA plugin with torch.utils.cpp_extension.load on first use (about
40 s, needs nvcc and ninja) and then imports it by name. Recent torch no longer puts the build
folder on sys.path, so that import fails although the build succeeded; putting the folder
there first (the one torch builds into, for the name nvdiffrast asks for) fixes it. This is
the only module that imports nvdiffrast.
"""

from __future__ import annotations

import re
import sys
from types import ModuleType

import torch


class RasterUnavailable(RuntimeError):
    """nvdiffrast cannot be used here (not installed, or no CUDA)."""


def plugin_name(gl: bool = False) -> str:
    """The extension name nvdiffrast.torch builds and imports (its ops._get_plugin)."""
    import nvdiffrast

    name = f"nvdiffrast_plugin_{nvdiffrast.__version__}_torch{torch.__version__}"
    return re.sub(r"\W|^(?=\d)", "_", name + ("_gl" if gl else ""))


def load_nvdiffrast() -> ModuleType:
    """nvdiffrast.torch with its plugin's build folder on sys.path; RasterUnavailable if the
    package is missing."""
    try:
        from torch.utils import cpp_extension

        build_dir = cpp_extension._get_build_directory(plugin_name(), False)
    except ImportError as error:
        raise RasterUnavailable("nvdiffrast is not installed (pip install diffrp-nvdiffrast)"
                                ) from error
    if build_dir not in sys.path:
        sys.path.insert(0, build_dir)
    import nvdiffrast.torch as dr

    return dr


def cuda_rasterizer() -> tuple[ModuleType, object]:
    """(nvdiffrast.torch, a CUDA raster context); RasterUnavailable without CUDA or the package."""
    if not torch.cuda.is_available():
        raise RasterUnavailable("nvdiffrast needs a CUDA device")
    dr = load_nvdiffrast()
    return dr, dr.RasterizeCudaContext()


def pixels_to_clip(points: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """(N, V, 3) points, x/y in image pixels (pixel centres at integers, y down) and z
    towards the viewer -> (N, V, 4) clip coordinates for nvdiffrast, whose output row 0 is
    clip y = -1, so image rows come out in order. Depth is normalised per frame to [-0.9, 0.9]
    with nearer points smaller, as nvdiffrast's depth test wants."""
    x = (points[..., 0] + 0.5) / width * 2 - 1
    y = (points[..., 1] + 0.5) / height * 2 - 1
    z = points[..., 2].detach()
    centre = z.mean(1, keepdim=True)
    reach = (z - centre).abs().amax(1, keepdim=True).clamp_min(1e-6)
    depth = -(points[..., 2] - centre) / reach * 0.9
    return torch.stack([x, y, depth, torch.ones_like(x)], -1).contiguous()


def render_vertex_colours(
    dr: ModuleType, context: object, points: torch.Tensor, triangles: torch.Tensor,
    colours: torch.Tensor, height: int, width: int,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Rasterise a mesh with per-vertex colours: (N, H, W, C) image (antialiased, so the
    silhouette has gradients) and (N, H, W, 1) coverage mask."""
    clip = pixels_to_clip(points, height, width)
    tri = triangles.to(torch.int32).contiguous()
    rast, _ = dr.rasterize(context, clip, tri, (height, width))
    image, _ = dr.interpolate(colours.contiguous(), rast, tri)
    image = dr.antialias(image, rast, clip, tri)
    return image, (rast[..., 3:] > 0).to(image.dtype)
