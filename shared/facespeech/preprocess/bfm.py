"""The Basel Face Model 2009 as NeRFFaceSpeech uses it (BFM09_model_info.mat), and its fit.

The file is the one 3DMM-Fitting-Pytorch builds from BFM's 01_MorphableModel.mat and the
expression PCA (users supply it; it cannot be downloaded here). Keys: meanshape (1, 3V),
idBase (3V, 80), exBase (3V, 64), meantex (1, 3V), texBase (3V, 80), tri (F, 3) and
keypoints (1, 68), both 1-based. Vertices are stored x, y, z, x, y, z, ...; the face looks
along +z with y up.

The fit (torch; any device): identity and albedo shared by the clip, per frame expression,
rotation, weak-perspective scale and shift, and 9-band spherical-harmonics lighting. Stages:
the 68 keypoints against the tracked landmarks on every frame at once; then, when frames are
given, a photometric term as well: identity and albedo from frames spread over the clip, then
every frame in batches with them fixed. On the GPU the shaded mesh is rasterised with
nvdiffrast (preprocess.raster) and compared with the frame pixel by pixel; without it each
camera-facing vertex is compared with the pixel under it (sampled bilinearly, so it stays
differentiable). Small ridge terms keep the coefficients plausible.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Literal

import numpy as np
import scipy.io
import torch
import torch.nn.functional as F

from facespeech.preprocess.raster import RasterUnavailable, cuda_rasterizer, render_vertex_colours

REQUIRED_KEYS = ("meanshape", "idBase", "exBase", "meantex", "texBase", "tri", "keypoints")
# MediaPipe FaceMesh index of each of the 68 iBUG points (the mapping LatentSync and others use).
MEDIAPIPE_68 = [
    162, 234, 93, 58, 172, 136, 149, 148, 152, 377, 378, 365, 397, 288, 323, 454, 389,
    71, 63, 105, 66, 107, 336, 296, 334, 293, 301, 168, 197, 5, 4, 75, 97, 2, 326, 305,
    33, 160, 158, 133, 153, 144, 362, 385, 387, 263, 373, 380,
    61, 39, 37, 0, 267, 269, 291, 405, 314, 17, 84, 181, 78, 82, 13, 312, 308, 317, 14, 87,
]


@dataclass
class MorphableModel:
    mean_shape: np.ndarray  # (V, 3)
    id_base: np.ndarray  # (V * 3, n_id)
    exp_base: np.ndarray  # (V * 3, n_exp)
    mean_tex: np.ndarray  # (V, 3), 0..255
    tex_base: np.ndarray  # (V * 3, n_tex)
    triangles: np.ndarray  # (F, 3), 0-based
    keypoints: np.ndarray  # (68,), 0-based vertex indices


def load_bfm(path: Path) -> MorphableModel:
    """Read a BFM09_model_info.mat; ValueError names what is missing or malformed."""
    if not path.is_file():
        raise ValueError(f"{path}: no such file; supply BFM09_model_info.mat (see "
                         "3DMM-Fitting-Pytorch for how to build it from the Basel Face Model)")
    try:
        data = scipy.io.loadmat(str(path))
    except (scipy.io.matlab.MatReadError, ValueError, OSError) as error:
        raise ValueError(f"{path.name}: not a readable .mat file ({error})") from error
    missing = [key for key in REQUIRED_KEYS if key not in data]
    if missing:
        raise ValueError(f"{path.name}: not a BFM09_model_info.mat, keys {missing} are missing")
    mean_shape = np.asarray(data["meanshape"], np.float32).reshape(-1, 3)
    vertices = len(mean_shape)
    model = MorphableModel(
        mean_shape=mean_shape,
        id_base=np.asarray(data["idBase"], np.float32),
        exp_base=np.asarray(data["exBase"], np.float32),
        mean_tex=np.asarray(data["meantex"], np.float32).reshape(-1, 3),
        tex_base=np.asarray(data["texBase"], np.float32),
        triangles=np.asarray(data["tri"], np.int64) - 1,
        keypoints=np.asarray(data["keypoints"], np.int64).reshape(-1) - 1,
    )
    for name in ("id_base", "exp_base", "tex_base"):
        if getattr(model, name).shape[0] != 3 * vertices:
            raise ValueError(f"{path.name}: {name} has {getattr(model, name).shape[0]} rows, "
                             f"expected 3 x {vertices} vertices")
    if len(model.keypoints) != 68 or model.keypoints.max() >= vertices:
        raise ValueError(f"{path.name}: keypoints must be 68 vertex indices")
    if model.triangles.min() < 0 or model.triangles.max() >= vertices:
        raise ValueError(f"{path.name}: tri refers to vertices that do not exist")
    return model


@dataclass(frozen=True)
class FitConfig:
    iterations: int = 300  # landmark stage, every frame at once
    lr: float = 0.03
    # measured on a 3-minute clip (docs/PERFORMANCE.md): 1 lets the photometric term drag the
    # mesh 5.5 px off the landmarks into a worse optimum; 10 gives 1.4 px and less colour error
    landmark_weight: float = 10.0
    photo_weight: float = 0.5
    id_reg: float = 1e-5
    exp_reg: float = 1e-5
    tex_reg: float = 1e-5
    # Photometric stages (when frames are given): identity and albedo from a few frames spread
    # over the clip, then every frame in batches with them fixed.
    identity_frames: int = 32
    identity_iterations: int = 150
    photo_iterations: int = 40
    batch_frames: int = 256
    photo_size: int = 224  # frames are scaled to this many pixels wide for the photometric term
    renderer: Literal["auto", "nvdiffrast", "vertices"] = "auto"


@dataclass
class FitResult:
    identity: np.ndarray  # (n_id,)
    albedo: np.ndarray  # (n_tex,)
    expression: np.ndarray  # (N, n_exp)
    rotation: np.ndarray  # (N, 3, 3)
    scale: np.ndarray  # (N,)
    shift: np.ndarray  # (N, 2) image pixels
    lighting: np.ndarray  # (N, 9, 3)
    landmark_rmse_px: float
    keypoints_px: np.ndarray  # (N, 68, 3) fitted keypoints, x/y in image pixels (y down)
    photometric_error: float | None = None  # mean |rendered - frame| colour, 0..1 per channel
    renderer: str | None = None  # what drew the photometric term: nvdiffrast or vertices

    def vertices_px(self, model: MorphableModel, frame: int) -> np.ndarray:
        """(V, 3) fitted mesh of one frame, x/y in image pixels (y down)."""
        shape = model.mean_shape + (model.id_base @ self.identity + model.exp_base
                                    @ self.expression[frame]).reshape(-1, 3)
        posed = shape @ self.rotation[frame].T * [1.0, -1.0, 1.0] * self.scale[frame]
        return (posed + [*self.shift[frame], 0.0]).astype(np.float32)


def rodrigues(axis_angle: torch.Tensor) -> torch.Tensor:
    """(N, 3) axis-angle -> (N, 3, 3) rotation matrices."""
    angle = axis_angle.norm(dim=1, keepdim=True).clamp_min(1e-8)
    x, y, z = (axis_angle / angle).unbind(1)
    zero = torch.zeros_like(x)
    cross = torch.stack([zero, -z, y, z, zero, -x, -y, x, zero], 1).view(-1, 3, 3)
    eye = torch.eye(3, device=axis_angle.device).expand_as(cross)
    sin, cos = angle.sin()[:, :, None], angle.cos()[:, :, None]
    return eye + sin * cross + (1 - cos) * cross @ cross


def vertex_normals(vertices: torch.Tensor, triangles: torch.Tensor) -> torch.Tensor:
    """(N, V, 3) vertices, (F, 3) triangles -> (N, V, 3) unit normals."""
    a, b, c = (vertices[:, triangles[:, i]] for i in range(3))
    face_normals = torch.cross(b - a, c - a, dim=-1)
    normals = torch.zeros_like(vertices).index_add_(1, triangles.reshape(-1),
                                                    face_normals.repeat_interleave(3, dim=1))
    return F.normalize(normals, dim=-1)


def sh_basis(normals: torch.Tensor) -> torch.Tensor:
    """(..., 3) normals -> (..., 9) spherical-harmonics irradiance basis (Ramamoorthi)."""
    x, y, z = normals.unbind(-1)
    a0, a1, a2 = math.pi, 2 * math.pi / math.sqrt(3), 2 * math.pi / math.sqrt(8)
    c0, c1 = 1 / math.sqrt(4 * math.pi), math.sqrt(3) / math.sqrt(4 * math.pi)
    c2 = 3 * math.sqrt(5) / math.sqrt(12 * math.pi)
    return torch.stack([
        torch.full_like(x, a0 * c0), -a1 * c1 * y, a1 * c1 * z, -a1 * c1 * x,
        a2 * c2 * x * y, -a2 * c2 * y * z, a2 * c2 * 0.5 / math.sqrt(3) * (3 * z * z - 1),
        -a2 * c2 * x * z, a2 * c2 * 0.5 * (x * x - y * y),
    ], -1)


def fit_3dmm(
    model: MorphableModel, landmarks: np.ndarray, frames: np.ndarray | None = None,
    config: FitConfig = FitConfig(),  # noqa: B008 - frozen, safe to share
    device: str = "cpu",
    landmark_width: int | None = None,
) -> FitResult:
    """Fit to (N, 68, 2) landmarks in image pixels (y down), and (N, H, W, 3) uint8 frames
    when given (photometric term). The frames may be a scaled copy of the image the landmarks
    are in: `landmark_width` is that image's width (default the frames' own)."""
    width = landmark_width or (0 if frames is None else frames.shape[2])
    if device != "cpu":
        return _fit(model, landmarks, frames, width, config, torch.device(device))
    # Hundreds of small steps: on a busy CPU, intra-op threads spin and cost 10x more
    # than they save (measured: 29 s with 2 threads, 2 s with one, load average 10).
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return _fit(model, landmarks, frames, width, config, torch.device(device))
    finally:
        torch.set_num_threads(threads)


SHARED = ("identity", "albedo")
PER_FRAME = ("expression", "axis_angle", "log_scale", "shift", "lighting")
Coefficients = dict[str, torch.Tensor]


class _Model:
    """The morphable model's tensors on one device, and the pieces of the fit's loss."""

    def __init__(self, model: MorphableModel, device: torch.device,
                 raster: tuple[ModuleType, object] | None = None, source_width: int = 0) -> None:
        tensor = lambda a: torch.as_tensor(a, dtype=torch.float32, device=device)  # noqa: E731
        self.device = device
        self.mean, self.id_base = tensor(model.mean_shape), tensor(model.id_base)
        self.exp_base = tensor(model.exp_base)
        self.mean_tex, self.tex_base = tensor(model.mean_tex) / 255, tensor(model.tex_base) / 255
        self.triangles = torch.as_tensor(model.triangles, device=device)
        self.keypoints = torch.as_tensor(model.keypoints, device=device)
        self.raster = raster  # nvdiffrast and its context; None: vertex sampling
        self.source_width = source_width  # of the frames the landmarks are in

    def posed(self, c: Coefficients) -> torch.Tensor:
        """(B, V, 3) vertices in image pixels (y down), z towards the viewer."""
        offsets = c["identity"] @ self.id_base.T + c["expression"] @ self.exp_base.T
        shape = self.mean + offsets.view(len(offsets), -1, 3)
        rotated = shape @ rodrigues(c["axis_angle"]).transpose(1, 2)
        flip = torch.tensor([1.0, -1.0, 1.0], device=self.device)  # model y up -> image y down
        projected = rotated * flip * c["log_scale"].exp()[:, None, None]
        shift = torch.cat([c["shift"], torch.zeros_like(c["shift"][:, :1])], 1)
        return projected + shift[:, None]

    def loss(self, c: Coefficients, target: torch.Tensor, spread: float,
             images: torch.Tensor | None, config: FitConfig) -> tuple[torch.Tensor, torch.Tensor]:
        """(total loss, photometric error or nan, detached) for one batch of frames."""
        posed = self.posed(c)
        loss = config.landmark_weight * ((posed[:, self.keypoints, :2] - target) / spread
                                         ).square().sum(-1).mean()
        photo = torch.full((), float("nan"), device=self.device)
        if images is not None:
            photo = self.photometric(posed, c, images)
            loss = loss + config.photo_weight * photo
        loss = loss + config.id_reg * c["identity"].square().sum() + config.exp_reg * (
            c["expression"].square().sum(1).mean()) + config.tex_reg * c["albedo"].square().sum()
        return loss, photo.detach() / 3

    def photometric(self, posed: torch.Tensor, c: Coefficients,
                    images: torch.Tensor) -> torch.Tensor:
        """Mean L1 colour error between the shaded mesh and (B, H', W', 3) frames scaled down
        from the landmarks' pixels by `images`' width."""
        albedo = self.mean_tex + (c["albedo"] @ self.tex_base.T).view(-1, 3)
        normals, colour = shade(posed, self.triangles, albedo, c["lighting"])
        return (_raster_error if self.raster else _vertex_error)(self, posed, normals, colour,
                                                                  images)


def shade(posed: torch.Tensor, triangles: torch.Tensor, albedo: torch.Tensor,
          lighting: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, V, 3) posed vertices -> camera-facing unit normals and shaded vertex colours under
    (B, 9, 3) spherical-harmonics lighting of a (V, 3) albedo in 0..1."""
    normals = vertex_normals(posed, triangles)
    # Winding conventions differ between files and the y flip mirrors the mesh: orient the
    # normals so that on average they face the camera (the face does, in talking video).
    normals = normals * torch.sign(normals[..., 2].mean(1, keepdim=True))[..., None]
    return normals, albedo[None] * torch.einsum("nvk,nkc->nvc", sh_basis(normals), lighting)


def _scaled(posed: torch.Tensor, factor: float) -> torch.Tensor:
    """Pixel coordinates of an image `factor` times the size (pixel centres stay centres)."""
    xy = posed[..., :2] * factor + 0.5 * (factor - 1)
    return torch.cat([xy, posed[..., 2:] * factor], -1)


def _raster_error(m: _Model, posed: torch.Tensor, _normals: torch.Tensor, colour: torch.Tensor,
                  images: torch.Tensor) -> torch.Tensor:
    assert m.raster is not None
    dr, context = m.raster
    height, width = images.shape[1:3]
    points = _scaled(posed, width / m.source_width)
    rendered, covered = render_vertex_colours(dr, context, points, m.triangles, colour,
                                              height, width)
    error = (rendered - images).abs().sum(-1, keepdim=True) * covered
    return error.sum() / covered.sum().clamp_min(1.0)


def _vertex_error(m: _Model, posed: torch.Tensor, normals: torch.Tensor, colour: torch.Tensor,
                  images: torch.Tensor) -> torch.Tensor:
    """Without a rasteriser: each camera-facing vertex against the pixel under it (sampled
    bilinearly, so it is differentiable)."""
    height, width = images.shape[1:3]
    points = _scaled(posed, width / m.source_width)
    visible = (normals[..., 2] > 0.1).float()
    grid = torch.stack([points[..., 0] / (width - 1), points[..., 1] / (height - 1)], -1) * 2 - 1
    observed = F.grid_sample(images.permute(0, 3, 1, 2), grid[:, :, None],
                             align_corners=True)[..., 0]  # (B, 3, V)
    error = (colour - observed.transpose(1, 2)).abs().sum(-1)
    return (error * visible).sum() / visible.sum().clamp_min(1.0)


def _rasterizer(config: FitConfig, device: torch.device) -> tuple[ModuleType, object] | None:
    """nvdiffrast and a context for the photometric term, or None for vertex sampling."""
    if config.renderer == "vertices" or (config.renderer == "auto" and device.type != "cuda"):
        return None
    try:
        return cuda_rasterizer()
    except RasterUnavailable:
        if config.renderer == "nvdiffrast":
            raise
        return None


def _initial(model: MorphableModel, target: torch.Tensor) -> Coefficients:
    """Frontal, scaled and shifted so the mean shape's keypoints cover the landmarks."""
    dev, n = target.device, len(target)
    keys = torch.as_tensor(model.mean_shape[model.keypoints, :2], device=dev) * torch.tensor(
        [1.0, -1.0], device=dev)
    spread = (target - target.mean(1, keepdim=True)).norm(dim=-1).mean(1)
    key_spread = (keys - keys.mean(0)).norm(dim=-1).mean()
    scale = spread / key_spread
    lighting = torch.zeros(n, 9, 3, device=dev)
    lighting[:, 0] = 0.8
    return {
        "identity": torch.zeros(model.id_base.shape[1], device=dev),
        "albedo": torch.zeros(model.tex_base.shape[1], device=dev),
        "expression": torch.zeros(n, model.exp_base.shape[1], device=dev),
        "axis_angle": torch.full((n, 3), 1e-4, device=dev),
        "log_scale": scale.log(),
        "shift": target.mean(1) - scale[:, None] * keys.mean(0),
        "lighting": lighting,
    }


def _optimise(m: _Model, coefficients: Coefficients, frames: torch.Tensor,
              target: torch.Tensor, spread: float, images: torch.Tensor | None,
              iterations: int, config: FitConfig, shared: bool) -> float:
    """Adam on the given frames' coefficients (and the shared ones when `shared`), written
    back in place; the last step's photometric error."""
    trainable = {k: coefficients[k][frames].clone() for k in PER_FRAME}
    if shared:
        trainable |= {k: coefficients[k].clone() for k in SHARED}
    fixed = {k: coefficients[k] for k in SHARED if not shared}
    for tensor in trainable.values():
        tensor.requires_grad_(True)
    optimiser = torch.optim.Adam(trainable.values(), lr=config.lr)
    photo = torch.full((), float("nan"))
    for _ in range(iterations):
        optimiser.zero_grad()
        loss, photo = m.loss(trainable | fixed, target[frames], spread, images, config)
        loss.backward()
        optimiser.step()
    with torch.no_grad():
        for key, tensor in trainable.items():
            if key in SHARED:
                coefficients[key] = tensor.detach()
            else:
                coefficients[key][frames] = tensor.detach()
    return float(photo)  # read once: a read every step would wait for the GPU every step


def _fit(model: MorphableModel, landmarks: np.ndarray, frames: np.ndarray | None,
         landmark_width: int, config: FitConfig, device: torch.device) -> FitResult:
    target = torch.as_tensor(landmarks, dtype=torch.float32, device=device)
    n = len(target)
    everything = torch.arange(n, device=device)
    spread = float((target - target.mean(1, keepdim=True)).norm(dim=-1).mean())
    coefficients = _initial(model, target)
    # Landmarks first, on every frame at once: only the 68 keypoints of the model are needed.
    coarse = _Model(_keypoints_only(model), device)
    _optimise(coarse, coefficients, everything, target, spread, None, config.iterations,
              config, shared=True)
    photo: float | None = None
    renderer = None
    if frames is not None:
        raster = _rasterizer(config, device)
        renderer = "nvdiffrast" if raster else "vertices"
        full = _Model(model, device, raster, source_width=landmark_width)
        photo = _photometric_fit(full, coefficients, target, spread, frames, config)
    with torch.no_grad():
        keypoints = coarse.posed(coefficients)
        rmse = float((keypoints[..., :2] - target).square().sum(-1).mean().sqrt())
        values = {k: v.cpu().numpy() for k, v in coefficients.items()}
        return FitResult(
            identity=values["identity"], albedo=values["albedo"],
            expression=values["expression"],
            rotation=rodrigues(coefficients["axis_angle"]).cpu().numpy(),
            scale=np.exp(values["log_scale"]), shift=values["shift"],
            lighting=values["lighting"], landmark_rmse_px=rmse,
            keypoints_px=keypoints.cpu().numpy(), photometric_error=photo, renderer=renderer,
        )


def _photometric_fit(m: _Model, coefficients: Coefficients, target: torch.Tensor,
                     spread: float, frames: np.ndarray, config: FitConfig) -> float:
    """Identity and albedo from frames spread over the clip, then every frame in batches;
    the mean photometric error of the final steps."""
    n = len(target)
    spaced = np.unique(np.linspace(0, n - 1, min(n, config.identity_frames)).round().astype(int))
    chosen = torch.as_tensor(spaced, device=m.device)
    _optimise(m, coefficients, chosen, target, spread, _photo_images(frames, spaced, m, config),
              config.identity_iterations, config, shared=True)
    errors = []
    for start in range(0, n, config.batch_frames):
        batch = np.arange(start, min(n, start + config.batch_frames))
        images = _photo_images(frames, batch, m, config)
        error = _optimise(m, coefficients, torch.as_tensor(batch, device=m.device), target,
                          spread, images, config.photo_iterations, config, shared=False)
        errors.append((error, len(batch)))
    return sum(e * count for e, count in errors) / n


def _photo_images(frames: np.ndarray, index: np.ndarray, m: _Model,
                  config: FitConfig) -> torch.Tensor:
    """(B, H', W', 3) float frames at the photometric term's size, on the fit's device."""
    images = torch.as_tensor(np.asarray(frames[index]), device=m.device).float() / 255
    height, width = images.shape[1:3]
    size = min(config.photo_size, width)
    if size == width:
        return images
    scaled = F.interpolate(images.permute(0, 3, 1, 2), size=(round(height * size / width), size),
                           mode="area")
    return scaled.permute(0, 2, 3, 1).contiguous()


def _keypoints_only(model: MorphableModel) -> MorphableModel:
    rows = (3 * model.keypoints[:, None] + np.arange(3)).reshape(-1)
    return MorphableModel(
        mean_shape=model.mean_shape[model.keypoints], id_base=model.id_base[rows],
        exp_base=model.exp_base[rows], mean_tex=model.mean_tex[model.keypoints],
        tex_base=model.tex_base[rows], triangles=np.zeros((0, 3), np.int64),
        keypoints=np.arange(len(model.keypoints)),
    )
