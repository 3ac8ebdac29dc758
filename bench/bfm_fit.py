"""The 3DMM fit of a 3-minute talking clip on the GPU (issue 9: <= 2 minutes on one H100).

The Basel Face Model cannot be downloaded here, so the bench builds a face-shaped morphable
model in the same BFM09_model_info.mat format from the clip itself: the mean and the
expression basis from its tracked, pose-free FaceMesh landmarks (PCA), MediaPipe's triangle
mesh, smooth random identity and albedo bases, and the mean colour of the crops under each
vertex. Midpoint subdivision brings it to the Basel model's size (3 levels: 27,656 vertices
and 54,656 triangles, against BFM09's 35,709 and 70,789), so the rasteriser and the bases cost
what they would. The 68 keypoints are the MediaPipe points the pipeline maps (MEDIAPIPE_68).

    python -m bench.bfm_fit build DATASET WORK        # CPU, needs MediaPipe: model + crops
    python -m bench.bfm_fit fit WORK OUT --seconds 180   # GPU: the timed fit and overlays

`fit` loops the clip's frames to `seconds` at 25 fps, as the preprocessing bench loops the
64 s clip into 3 minutes.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import cv2
import numpy as np
import scipy.io
import torch
import typer

from facespeech import dataset
from facespeech.preprocess import raster
from facespeech.preprocess.bfm import (
    MEDIAPIPE_68,
    FitConfig,
    FitResult,
    MorphableModel,
    fit_3dmm,
    load_bfm,
    shade,
)

app = typer.Typer(add_completion=False)
MESH_POINTS = 468
CROP = 256


def _triangles() -> np.ndarray:
    """MediaPipe FaceMesh's triangles: the 3-cliques of its tesselation edges."""
    from mediapipe.python.solutions.face_mesh_connections import FACEMESH_TESSELATION

    neighbours: dict[int, set[int]] = {}
    for a, b in FACEMESH_TESSELATION:
        neighbours.setdefault(a, set()).add(b)
        neighbours.setdefault(b, set()).add(a)
    found = {tuple(sorted((a, b, c))) for a, near in neighbours.items() for b in near
             for c in near & neighbours[b]}
    return np.array(sorted(found), np.int64)


def _smooth_fields(points: np.ndarray, count: int, amplitude: float,
                   rng: np.random.Generator) -> np.ndarray:
    """(3V, count) smooth random displacement (or colour) fields over the points."""
    span = np.ptp(points, axis=0).max()
    fields = []
    for _ in range(count):
        centres = points[rng.choice(len(points), 4, replace=False)]
        weights = np.exp(-((points[:, None] - centres[None]) ** 2).sum(-1) / (0.1 * span**2))
        fields.append((weights @ rng.normal(size=(4, 3))).reshape(-1))
    basis = np.stack(fields, 1)
    return basis / np.abs(basis).max(0) * amplitude


@app.command()
def build(root: Path, work: Path, person: str = "p0") -> None:
    """Model file, crops at 256 px and the 68 landmarks from a preprocessed dataset."""
    from facespeech.preprocess.pose import fit_poses

    info = dataset.read_info(root)
    landmarks = dataset.read_landmarks_3d(root, person)
    if landmarks is None:
        raise typer.BadParameter(f"{root}: no 3D landmarks for {person}")
    (track,) = [t for t in dataset.read_tracks(root) if t.person == person]
    frames = [p.frame for p in track.poses]
    # pose-free FaceMesh points, turned into the Basel convention: y up, z towards the viewer
    shapes = fit_poses(landmarks, info.image_size).normalised[:, :MESH_POINTS] * [1, -1, -1]
    shapes = shapes * 100.0
    mean = shapes.mean(0)
    centred = (shapes - mean).reshape(len(shapes), -1)
    _, singular, components = np.linalg.svd(centred, full_matrices=False)
    deviations = singular[:16] / np.sqrt(len(shapes))
    work.mkdir(parents=True, exist_ok=True)
    (work / "crops").mkdir(exist_ok=True)
    colours = np.zeros((MESH_POINTS, 3))
    sampled = 0
    for i, frame in enumerate(frames):
        image = cv2.imread(str(dataset.image_path(root, person, frame)))
        if i % 8 == 0:
            x, y = np.clip(landmarks[i, :MESH_POINTS, :2].round().astype(int), 0,
                           info.image_size - 1).T
            colours += image[y, x, ::-1]
            sampled += 1
        small = cv2.resize(image, (CROP, CROP), interpolation=cv2.INTER_AREA)
        cv2.imwrite(str(work / "crops" / f"{i:05d}.jpg"), small, [cv2.IMWRITE_JPEG_QUALITY, 92])
    rng = np.random.default_rng(0)
    scipy.io.savemat(work / "model.mat", {
        "meanshape": mean.reshape(1, -1),
        "idBase": _smooth_fields(mean, 10, 0.05 * np.ptp(mean[:, 0]), rng),
        "exBase": (components[:16] * deviations[:, None]).T,
        "meantex": (colours / sampled).reshape(1, -1),
        "texBase": _smooth_fields(mean, 10, 25.0, rng),
        "tri": _triangles() + 1,
        "keypoints": (np.array(MEDIAPIPE_68) + 1).reshape(1, -1),
    })
    np.save(work / "landmarks68.npy", landmarks[:, MEDIAPIPE_68, :2].astype(np.float32))
    (work / "info.json").write_text(json.dumps({"image_size": info.image_size,
                                                "frames": len(frames)}))
    print(f"{work}: {len(frames)} frames, {len(mean)} vertices")


def subdivided(model: MorphableModel) -> MorphableModel:
    """Midpoint subdivision: every edge gets a vertex (the mean of its ends, bases too) and
    every triangle becomes four. Vertex indices, keypoints included, keep their meaning."""
    tri = model.triangles
    edges = np.sort(np.concatenate([tri[:, [0, 1]], tri[:, [1, 2]], tri[:, [2, 0]]]), axis=1)
    unique, inverse = np.unique(edges, axis=0, return_inverse=True)
    count = len(model.mean_shape)
    middle = (count + inverse.reshape(3, -1)).T  # (F, 3): vertex on edge 01, 12, 20

    def grown(values: np.ndarray, per_vertex: int) -> np.ndarray:
        rows = values.reshape(count, per_vertex, -1)
        added = (rows[unique[:, 0]] + rows[unique[:, 1]]) / 2
        return np.concatenate([rows, added]).reshape(-1, values.shape[-1])

    a, b, c = tri.T
    ab, bc, ca = middle.T
    return MorphableModel(
        mean_shape=grown(model.mean_shape, 1), id_base=grown(model.id_base, 3),
        exp_base=grown(model.exp_base, 3), mean_tex=grown(model.mean_tex, 1),
        tex_base=grown(model.tex_base, 3),
        triangles=np.concatenate([np.stack(t, 1) for t in
                                  ((a, ab, ca), (ab, b, bc), (ca, bc, c), (ab, bc, ca))]),
        keypoints=model.keypoints,
    )


def _overlay(model: MorphableModel, fit: FitResult, crops: np.ndarray, frames: list[int],
             image_size: int) -> np.ndarray:
    """Rows of real crop | shaded fitted mesh over it | the mesh alone."""
    dr, context = raster.cuda_rasterizer()
    factor = CROP / image_size
    triangles = torch.as_tensor(model.triangles, device="cuda")
    albedo = torch.as_tensor(model.mean_tex + (model.tex_base @ fit.albedo).reshape(-1, 3),
                             device="cuda") / 255
    rows = []
    for frame in frames:
        points = torch.as_tensor(fit.vertices_px(model, frame), device="cuda")[None]
        points = torch.cat([points[..., :2] * factor + 0.5 * (factor - 1), points[..., 2:]], -1)
        lighting = torch.as_tensor(fit.lighting[frame], device="cuda")[None]
        _, colour = shade(points, triangles, albedo, lighting)
        image, covered = raster.render_vertex_colours(dr, context, points, triangles,
                                                      colour.clamp(0, 1), CROP, CROP)
        mesh = (image[0].cpu().numpy() * 255).astype(np.uint8)
        mask = covered[0].cpu().numpy()
        real = crops[frame]
        blended = (real * (1 - 0.6 * mask) + mesh * 0.6 * mask).astype(np.uint8)
        rows.append(np.concatenate([real, blended, mesh], 1))
    return np.concatenate(rows, 0)


@app.command()
def fit(work: Path, out: Path, seconds: float = 180.0, fps: float = 25.0, levels: int = 3,
        photo_size: int = 224, landmark_weight: float = FitConfig.landmark_weight,
        name: str = "bfm_fit") -> None:
    """The timed fit of the looped clip; summary JSON and an overlay PNG in OUT."""
    out.mkdir(parents=True, exist_ok=True)
    info = json.loads((work / "info.json").read_text())
    base = load_bfm(work / "model.mat")
    model = base
    for _ in range(levels):
        model = subdivided(model)
    crops = np.stack([cv2.imread(str(p))[..., ::-1] for p in sorted((work / "crops").glob(
        "*.jpg"))])
    landmarks = np.load(work / "landmarks68.npy")
    index = np.arange(int(seconds * fps)) % len(crops)
    config = FitConfig(photo_size=photo_size, landmark_weight=landmark_weight)
    started = time.perf_counter()
    raster.cuda_rasterizer()  # the plugin's one-time build (cached after the first run)
    fit_3dmm(model, landmarks[:4], crops[:4], FitConfig(iterations=2, identity_iterations=2,
             photo_iterations=2), device="cuda", landmark_width=info["image_size"])
    torch.cuda.synchronize()
    warm_up = time.perf_counter() - started
    torch.cuda.reset_peak_memory_stats()
    started = time.perf_counter()
    result = fit_3dmm(model, landmarks[index], crops[index], config, device="cuda",
                      landmark_width=info["image_size"])
    torch.cuda.synchronize()
    seconds_fit = time.perf_counter() - started
    summary = {
        "frames": len(index), "clip_frames": len(crops), "seconds_of_video": seconds,
        "vertices": len(model.mean_shape), "triangles": len(model.triangles),
        "fit_s": round(seconds_fit, 2), "plugin_build_and_warm_up_s": round(warm_up, 2),
        "landmark_rmse_px": round(result.landmark_rmse_px, 3),
        "photometric_error": result.photometric_error, "renderer": result.renderer,
        "peak_gpu_mem_gb": round(torch.cuda.max_memory_allocated() / 1e9, 2),
        "device": torch.cuda.get_device_name(), "torch": torch.__version__,
        "config": config.__dict__,
    }
    print(json.dumps(summary, indent=2))
    (out / f"{name}_summary.json").write_text(json.dumps(summary, indent=2))
    shown = [0, len(crops) // 3, 2 * len(crops) // 3, len(crops) - 1]
    grid = _overlay(model, result, crops, shown, info["image_size"])
    cv2.imwrite(str(out / f"{name}_overlay.png"), grid[..., ::-1])


if __name__ == "__main__":
    app()
