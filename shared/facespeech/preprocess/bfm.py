"""The Basel Face Model 2009 as NeRFFaceSpeech uses it (BFM09_model_info.mat), and its fit.

The file is the one 3DMM-Fitting-Pytorch builds from BFM's 01_MorphableModel.mat and the
expression PCA (users supply it; it cannot be downloaded here). Keys: meanshape (1, 3V),
idBase (3V, 80), exBase (3V, 64), meantex (1, 3V), texBase (3V, 80), tri (F, 3) and
keypoints (1, 68), both 1-based. Vertices are stored x, y, z, x, y, z, ...; the face looks
along +z with y up.

The fit (torch; any device): identity and albedo shared by the clip, per frame expression,
rotation, weak-perspective scale and shift, and 9-band spherical-harmonics lighting. Losses:
the 68 keypoints against the tracked landmarks, and, when frames are given, a photometric
term: each visible vertex's shaded colour against the frame's colour where it projects
(sampled bilinearly, so it is differentiable without a rasteriser; nvdiffrast can replace it
on the GPU). Small ridge terms keep the coefficients plausible.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import scipy.io
import torch
import torch.nn.functional as F

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
    data = scipy.io.loadmat(str(path))
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
    iterations: int = 300
    lr: float = 0.03
    landmark_weight: float = 1.0
    photo_weight: float = 0.5
    id_reg: float = 1e-5
    exp_reg: float = 1e-5
    tex_reg: float = 1e-5


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
    # (N, V, 3) fitted vertices, x/y in image pixels (y down); a landmark-only fit (no
    # frames) gives the 68 keypoints only
    vertices_px: np.ndarray
    photometric_error: float | None = None  # mean |rendered - frame| colour, 0..1 per channel


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
) -> FitResult:
    """Fit to (N, 68, 2) landmarks in image pixels (y down), and (N, H, W, 3) uint8 frames
    of the same pixels when given (photometric term)."""
    if device != "cpu":
        return _fit(model, landmarks, frames, config, device)
    # Hundreds of small steps: on a busy CPU, intra-op threads spin and cost 10x more
    # than they save (measured: 29 s with 2 threads, 2 s with one, load average 10).
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return _fit(model, landmarks, frames, config, device)
    finally:
        torch.set_num_threads(threads)


def _fit(model: MorphableModel, landmarks: np.ndarray, frames: np.ndarray | None,
         config: FitConfig, device: str) -> FitResult:
    if frames is None:  # only the keypoints are seen: fit the model restricted to them
        model = _keypoints_only(model)
    dev = torch.device(device)
    n = len(landmarks)
    tensor = lambda a: torch.as_tensor(a, dtype=torch.float32, device=dev)  # noqa: E731
    mean, id_base = tensor(model.mean_shape), tensor(model.id_base)
    exp_base = tensor(model.exp_base)
    mean_tex, tex_base = tensor(model.mean_tex) / 255, tensor(model.tex_base) / 255
    triangles = torch.as_tensor(model.triangles, device=dev)
    keypoints = torch.as_tensor(model.keypoints, device=dev)
    target = tensor(landmarks)
    images = None if frames is None else tensor(frames).permute(0, 3, 1, 2) / 255

    # Start: frontal, scaled and shifted so the mean shape's keypoints cover the landmarks.
    key_mean = mean[keypoints, :2] * torch.tensor([1.0, -1.0], device=dev)
    spread = (target - target.mean(1, keepdim=True)).norm(dim=-1).mean(1)
    key_spread = (key_mean - key_mean.mean(0)).norm(dim=-1).mean()
    log_scale = (spread / key_spread).log().clone().requires_grad_(True)
    shift = (target.mean(1) - (spread / key_spread)[:, None] * key_mean.mean(0)).clone()
    shift.requires_grad_(True)
    identity = torch.zeros(id_base.shape[1], device=dev, requires_grad=True)
    albedo = torch.zeros(tex_base.shape[1], device=dev, requires_grad=True)
    expression = torch.zeros(n, exp_base.shape[1], device=dev, requires_grad=True)
    axis_angle = torch.full((n, 3), 1e-4, device=dev, requires_grad=True)
    lighting = torch.zeros(n, 9, 3, device=dev)
    lighting[:, 0] = 0.8
    lighting.requires_grad_(True)
    optimiser = torch.optim.Adam(
        [log_scale, shift, identity, albedo, expression, axis_angle, lighting], lr=config.lr)

    def pose(vertices: torch.Tensor) -> torch.Tensor:
        rotated = vertices @ rodrigues(axis_angle).transpose(1, 2)
        flip = torch.tensor([1.0, -1.0, 1.0], device=dev)  # model y up -> image y down
        projected = rotated * flip * log_scale.exp()[:, None, None]
        return projected + torch.cat([shift, torch.zeros(n, 1, device=dev)], 1)[:, None]

    def shape() -> torch.Tensor:
        offsets = identity @ id_base.T + expression @ exp_base.T  # (N, 3V)
        return mean + offsets.view(n, -1, 3)

    for _ in range(config.iterations):
        optimiser.zero_grad()
        posed = pose(shape())
        scale_px = spread.mean()
        loss = config.landmark_weight * ((posed[:, keypoints, :2] - target) / scale_px
                                         ).square().sum(-1).mean()
        if images is not None:
            loss = loss + config.photo_weight * _photometric(
                posed, triangles, mean_tex + (albedo @ tex_base.T).view(-1, 3), lighting, images)
        loss = loss + config.id_reg * identity.square().sum() + config.exp_reg * (
            expression.square().sum(1).mean()) + config.tex_reg * albedo.square().sum()
        loss.backward()
        optimiser.step()

    with torch.no_grad():
        posed = pose(shape())
        rmse = float((posed[:, keypoints, :2] - target).square().sum(-1).mean().sqrt())
        photo = None if images is None else float(_photometric(
            posed, triangles, mean_tex + (albedo @ tex_base.T).view(-1, 3), lighting, images)) / 3
        return FitResult(
            identity=identity.cpu().numpy(), albedo=albedo.cpu().numpy(),
            expression=expression.cpu().numpy(), rotation=rodrigues(axis_angle).cpu().numpy(),
            scale=log_scale.exp().cpu().numpy(), shift=shift.cpu().numpy(),
            lighting=lighting.cpu().numpy(), landmark_rmse_px=rmse,
            vertices_px=posed.cpu().numpy(), photometric_error=photo,
        )


def _keypoints_only(model: MorphableModel) -> MorphableModel:
    rows = (3 * model.keypoints[:, None] + np.arange(3)).reshape(-1)
    return MorphableModel(
        mean_shape=model.mean_shape[model.keypoints], id_base=model.id_base[rows],
        exp_base=model.exp_base[rows], mean_tex=model.mean_tex[model.keypoints],
        tex_base=model.tex_base[rows], triangles=np.zeros((0, 3), np.int64),
        keypoints=np.arange(len(model.keypoints)),
    )


def _photometric(posed: torch.Tensor, triangles: torch.Tensor, albedo: torch.Tensor,
                 lighting: torch.Tensor, images: torch.Tensor) -> torch.Tensor:
    """Mean |shaded vertex colour - frame colour under it| over vertices facing the camera."""
    normals = vertex_normals(posed, triangles)
    # Winding conventions differ between files and the y flip mirrors the mesh: orient the
    # normals so that on average they face the camera (the face does, in talking video).
    normals = normals * torch.sign(normals[..., 2].mean(1, keepdim=True))[..., None]
    visible = (normals[..., 2] > 0.1).float()
    shading = torch.einsum("nvk,nkc->nvc", sh_basis(normals), lighting)
    colour = albedo[None] * shading
    height, width = images.shape[2:]
    grid = torch.stack([posed[..., 0] / (width - 1), posed[..., 1] / (height - 1)], -1) * 2 - 1
    observed = F.grid_sample(images, grid[:, :, None], align_corners=True)[..., 0]  # (N, 3, V)
    error = (colour - observed.transpose(1, 2)).abs().sum(-1)
    return (error * visible).sum() / visible.sum().clamp_min(1.0)
