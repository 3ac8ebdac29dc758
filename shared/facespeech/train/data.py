"""From the dataset layout to tensors: crops, masks, normalised poses, audio windows.

Shared by training and rendering, so both see the same pose normalisation and audio windows.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from facespeech.dataset import (
    LABEL_FACE,
    LABEL_MOUTH,
    LABEL_NECK_TORSO,
    FramePose,
    PersonTrack,
    image_path,
    mask_path,
    semantic_path,
)
from facespeech.errors import InputError

# Crop-normalised focal the model is built around (head of radius 1 at distance 4 fills ~60 %
# of the crop); per-frame focal changes scale it, within bounds.
BASE_FOCAL = 1.2
MAX_OFFSET = 0.3  # head units; larger tracked shifts are tracking noise in an aligned crop

# Outer-lip landmark indices: MediaPipe face mesh (468/478 points) and iBUG 68.
_LIPS_MEDIAPIPE = [61, 146, 91, 181, 84, 17, 314, 405, 321, 375, 291, 409, 270, 269, 267, 0,
                   37, 39, 40, 185]
_LIPS_68 = list(range(48, 60))
# Points that the mouth does not move (nose tip, outer eye corners), which place the lower
# face: MediaPipe face mesh and iBUG 68.
_STILL_MEDIAPIPE = (1, 33, 263)
_STILL_68 = (30, 36, 45)
# The lower face around the nose tip, in outer-eye-corner distances: left, top, right, bottom.
# Wide and deep enough for the jaw line and an opened chin.
LOWER_FACE_SPAN = (0.9, 0.12, 0.9, 1.4)


def _nearest_rotation(matrix: np.ndarray) -> np.ndarray:
    """Project a 3x3 matrix onto SO(3); identity for anything non-finite or degenerate."""
    if matrix.shape != (3, 3) or not np.isfinite(matrix).all():
        return np.eye(3)
    u, _, vt = np.linalg.svd(matrix)
    rotation = u @ vt
    if np.linalg.det(rotation) < 0:
        u[:, -1] *= -1
        rotation = u @ vt
    return rotation


@dataclass
class PoseNormaliser:
    """Makes tracked poses robust: rotations relative to the clip's mean head orientation,
    translations relative to their median (and clipped), focal relative to its median."""

    mean_rotation: list[list[float]]
    translation_median: list[float]
    focal_median: float

    @classmethod
    def fit(cls, poses: list[FramePose]) -> PoseNormaliser:
        rotations = np.stack([_nearest_rotation(np.asarray(p.rotation, float)) for p in poses])
        translations = np.array([_finite(p.translation, 3) for p in poses])
        focals = np.array([p.focal for p in poses], dtype=float)
        focals = focals[np.isfinite(focals) & (focals > 0)]
        return cls(
            mean_rotation=_nearest_rotation(rotations.mean(axis=0)).tolist(),
            translation_median=np.median(translations, axis=0).tolist(),
            focal_median=float(np.median(focals)) if focals.size else 1.0,
        )

    def apply(
        self, poses: list[FramePose], camera_distance: float
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """-> rotation (N, 3, 3) canonical->camera, offset (N, 3) head units, focal (N,)."""
        mean_t = np.asarray(self.mean_rotation).T
        rotation = np.stack([_nearest_rotation(np.asarray(p.rotation, float)) @ mean_t
                             for p in poses])
        translation = np.array([_finite(p.translation, 3) for p in poses])
        # apparent size: focal / depth, relative to the clip's median (1 where unknown)
        zoom = np.array([p.focal / self.focal_median if np.isfinite(p.focal) and p.focal > 0
                         else 1.0 for p in poses])
        median_depth = self.translation_median[2]
        if median_depth > 0:
            depth = translation[:, 2]
            zoom *= np.where(depth > 0, median_depth / np.where(depth > 0, depth, 1.0), 1.0)
        focal = BASE_FOCAL * np.clip(zoom, 0.8, 1.25)
        shift = translation - self.translation_median
        # an image-plane shift of d crop widths is d * distance / focal head units at the head
        offset = np.zeros((len(poses), 3))
        offset[:, :2] = np.clip(shift[:, :2] * camera_distance / focal[:, None],
                                -MAX_OFFSET, MAX_OFFSET)
        return (torch.tensor(rotation, dtype=torch.float32),
                torch.tensor(offset, dtype=torch.float32), torch.tensor(focal, dtype=torch.float32))


def _finite(values: list[float], n: int) -> list[float]:
    array = np.asarray(values, dtype=float)
    return array.tolist() if array.shape == (n,) and np.isfinite(array).all() else [0.0] * n


def mouth_boxes(track: PersonTrack, crop_size: int) -> torch.Tensor:
    """(N, 4) x0, y0, x1, y1 in [0, 1] around the lips of each frame, padded by 30 %.

    Without recognisable landmarks the lower middle of the crop stands in for the mouth.
    """
    boxes = []
    for points in track.landmarks:
        array = np.asarray(points, dtype=float).reshape(-1, 2)
        index = _LIPS_MEDIAPIPE if len(array) >= 468 else _LIPS_68 if len(array) == 68 else None
        if index is None or not np.isfinite(array[index]).all():
            boxes.append([0.3, 0.6, 0.7, 0.9])
            continue
        lo, hi = array[index].min(axis=0) / crop_size, array[index].max(axis=0) / crop_size
        pad = (hi - lo) * 0.3 + 0.02
        boxes.append([*np.clip(lo - pad, 0, 1), *np.clip(hi + pad, 0, 1)])
    return torch.tensor(boxes, dtype=torch.float32)


def lower_face_boxes(track: PersonTrack, crop_size: int) -> torch.Tensor:
    """(N, 4) x0, y0, x1, y1 in [0, 1]: the lower face of each frame (nostrils, lips, cheeks,
    jaw and chin as far as an open mouth takes it), placed by the nose tip and sized by the
    eye corners — points speech does not move, so the box itself says nothing of the mouth.

    Without recognisable landmarks the lower middle of the crop stands in for it.
    """
    left, top, right, bottom = LOWER_FACE_SPAN
    boxes = []
    for points in track.landmarks:
        array = np.asarray(points, dtype=float).reshape(-1, 2)
        index = (_STILL_MEDIAPIPE if len(array) >= 468 else _STILL_68 if len(array) == 68
                 else None)
        if index is None or not np.isfinite(array[list(index)]).all():
            boxes.append([0.25, 0.5, 0.75, 0.95])
            continue
        nose, eye_a, eye_b = array[list(index)] / crop_size
        span = float(np.linalg.norm(eye_a - eye_b))
        box = [nose[0] - left * span, nose[1] - top * span,
               nose[0] + right * span, nose[1] + bottom * span]
        boxes.append(np.clip(box, 0, 1).tolist())
    return torch.tensor(boxes, dtype=torch.float32)


def hidden_boxes(track: PersonTrack, crop_size: int, region: str) -> torch.Tensor:
    """(N, 4) what a model hides of its reference crop (ModelConfig.mask_region): the mouth
    or the whole lower face."""
    if region == "lower_face":
        return lower_face_boxes(track, crop_size)
    return mouth_boxes(track, crop_size)


def load_images(root: Path, person: str, frames: list[int], size: int) -> torch.Tensor:
    """Crops of the given frames, resized to size: uint8 (N, 3, size, size)."""
    out = torch.empty(len(frames), 3, size, size, dtype=torch.uint8)
    for row, frame in enumerate(frames):
        path = image_path(root, person, frame)
        if not path.exists():
            raise InputError(f"dataset is missing the crop {path}")
        with Image.open(path) as image:
            rgb = image.convert("RGB").resize((size, size), Image.Resampling.BICUBIC)
        out[row] = torch.from_numpy(np.array(rgb)).permute(2, 0, 1)
    return out


def load_masks(root: Path, person: str, frames: list[int], size: int) -> torch.Tensor:
    """Face-region masks, uint8 (N, 1, size, size), 255 = face; all face where none was written."""
    out = torch.full((len(frames), 1, size, size), 255, dtype=torch.uint8)
    for row, frame in enumerate(frames):
        path = mask_path(root, person, frame)
        if path.exists():
            with Image.open(path) as image:
                grey = image.convert("L").resize((size, size), Image.Resampling.BILINEAR)
            out[row, 0] = torch.from_numpy(np.array(grey))
    return out


def load_person_masks(
    root: Path, person: str, frames: list[int], size: int
) -> torch.Tensor | None:
    """The person (face, mouth, hair, neck, torso) from the semantic label maps, uint8
    (N, 1, size, size), 255 = person; None when the dataset has no label maps."""
    if not semantic_path(root, person, frames[0]).exists():
        return None
    out = torch.zeros(len(frames), 1, size, size, dtype=torch.uint8)
    for row, frame in enumerate(frames):
        path = semantic_path(root, person, frame)
        if not path.exists():
            out[row] = out[row - 1] if row else 255  # a missing map: the last one, or all
            continue
        with Image.open(path) as image:
            labels = np.array(image.convert("L").resize((size, size), Image.Resampling.NEAREST))
        mask = np.isin(labels, (LABEL_FACE, LABEL_MOUTH, LABEL_NECK_TORSO))
        out[row, 0] = torch.from_numpy(mask.astype(np.uint8) * 255)
    return out


def audio_statistics(mel: np.ndarray) -> tuple[float, float]:
    """Mean and standard deviation of a clip's finite log-mel values: the normalisation a
    model is trained with and stores for rendering."""
    finite = mel[np.isfinite(mel)]
    return (float(finite.mean()), float(finite.std()) + 1e-5) if finite.size else (0.0, 1.0)


def audio_windows(mel: np.ndarray, n_frames: int, mean: float, std: float) -> torch.Tensor:
    """Log-mel (T, n_mels) -> normalised windows (n_frames, W, n_mels), one per video frame."""
    from facespeech.preprocess.audio_features import frame_windows

    windows = frame_windows(mel, n_frames)
    return torch.from_numpy((np.asarray(windows, dtype=np.float32) - mean) / std)


def neighbour_windows(windows: torch.Tensor, rows: torch.Tensor, k: int) -> torch.Tensor:
    """windows (T, W, M), rows (B,) frame indices -> (B, K, W, M): the K windows around each."""
    shifts = torch.arange(k, device=rows.device) - k // 2
    index = (rows[:, None] + shifts[None, :]).clamp(0, windows.shape[0] - 1)
    return windows[index]


@dataclass
class FrameConditions:
    """Per-frame model inputs besides audio and images, rows aligned with track.poses."""

    rotation: torch.Tensor  # (N, 3, 3)
    offset: torch.Tensor  # (N, 3)
    focal: torch.Tensor  # (N,)
    blink: torch.Tensor  # (N, 1)
    expression: torch.Tensor  # (N, E), E may be 0


def frame_conditions(
    track: PersonTrack, normaliser: PoseNormaliser, camera_distance: float, expression_dim: int
) -> FrameConditions:
    rotation, offset, focal = normaliser.apply(track.poses, camera_distance)
    blink = torch.tensor([[e.blink if np.isfinite(e.blink) else 0.0] for e in track.expressions],
                         dtype=torch.float32)
    expression = torch.zeros(len(track.expressions), expression_dim)
    for row, e in enumerate(track.expressions):
        if len(e.code) == expression_dim:
            expression[row] = torch.tensor(e.code, dtype=torch.float32).nan_to_num()
    return FrameConditions(rotation, offset, focal, blink, expression)


def expression_dim_of(track: PersonTrack) -> int:
    """Length of the expression code when every frame has one of the same length, else 0."""
    lengths = {len(e.code) for e in track.expressions}
    return lengths.pop() if len(lengths) == 1 else 0


def lip_dim_of(track: PersonTrack) -> int:
    """Length of the lip-shape code when every frame has one of the same length, else 0
    (datasets preprocessed before lip codes existed have none)."""
    lengths = {len(e.lips) if e.lips is not None else 0 for e in track.expressions}
    return lengths.pop() if len(lengths) == 1 else 0


def motion_codes(track: PersonTrack, train_rows: list[int], dim: int,
                 shape: str = "expression", takes: torch.Tensor | None = None) -> torch.Tensor:
    """(N, dim) per-frame mouth-motion targets: [mouth opening, shape code...][:dim], the shape
    code being the lip code or the expression code; each component standardised over the
    training rows so every component weighs the same. takes (N,) (segment_of): standardise
    each joined take over its own training rows instead, so a take's offset (another camera,
    another tracking of the same lips) does not read as a mouth that opens less."""
    if not dim:
        return torch.zeros(len(track.expressions), 0)
    shapes = [(e.lips or []) if shape == "lips" else e.code for e in track.expressions]
    raw = np.nan_to_num(np.array([[e.mouth_open, *code][:dim]
                                  for e, code in zip(track.expressions, shapes, strict=True)],
                                 dtype=np.float64))
    if raw.shape[1] < dim:
        raise InputError(f"the model's motion code has {dim} components; this dataset's "
                         f"{shape!r} codes give {raw.shape[1]}")
    groups = np.zeros(len(raw), dtype=np.int64) if takes is None else takes.numpy()
    scaled = np.empty_like(raw)
    for take in np.unique(groups):
        rows = np.flatnonzero(groups == take)
        fitted = raw[np.intersect1d(rows, train_rows)] if train_rows else raw[rows]
        if len(fitted) < 2:  # a take without training frames: the whole clip's scale
            fitted = raw[train_rows] if train_rows else raw
        scaled[rows] = (raw[rows] - fitted.mean(axis=0)) / np.maximum(fitted.std(axis=0), 1e-6)
    return torch.from_numpy(scaled.astype(np.float32))


@dataclass
class ClipTensors:
    """One person's clip in memory at training resolution."""

    track: PersonTrack
    images: torch.Tensor  # (N, 3, S, S) uint8, rows aligned with track.poses
    masks: torch.Tensor  # (N, 1, S, S) uint8
    mouth: torch.Tensor  # (N, 4) mouth boxes in [0, 1]
    hidden: torch.Tensor  # (N, 4) what a model hides of a reference (hidden_boxes)
    conditions: FrameConditions
    windows: torch.Tensor  # (T, W, n_mels) normalised audio windows, row = frame number - 1
    train_rows: list[int]
    held_out_rows: list[int]
    motion: torch.Tensor  # (N, M) standardised mouth-motion codes, M may be 0
    segment: torch.Tensor  # (N,) which joined source video each row comes from

    def across_videos(self, rows: torch.Tensor, candidates: torch.Tensor) -> torch.Tensor:
        """(R, C) True where a candidate row comes from another source video than the row:
        its lighting, framing and background differ, so it is no reference for it."""
        return self.segment[rows][:, None] != self.segment[candidates][None, :]

    def take_weights(self, rows: list[int], main_share: float | None) -> torch.Tensor | None:
        """Sampling weights over rows that give the main (last) take main_share of the draws,
        the other takes the rest in proportion to their frames; None (draw every row alike)
        for one take, for rows of one take only, or without a share."""
        main = self._in_main_take(rows)
        if main_share is None or bool(main.all()) or not bool(main.any()):
            return None
        return torch.where(main, main_share / main.sum(), (1 - main_share) / (~main).sum())

    def main_take_rows(self, rows: list[int]) -> list[int]:
        """Those rows that come from the main (last) take: the one a render walks over."""
        in_main = self._in_main_take(rows).tolist()
        return [row for row, main in zip(rows, in_main, strict=True) if main]

    def _in_main_take(self, rows: list[int]) -> torch.Tensor:
        return self.segment[rows] == self.segment.max()


def draw_rows(n: int, count: int, weights: torch.Tensor | None = None) -> torch.Tensor:
    """count indices into n rows, with replacement: alike, or by weights (a take_weights)."""
    if weights is None:
        return torch.randint(n, (count,))
    return torch.multinomial(weights, count, replacement=True)


def segment_of(track: PersonTrack) -> torch.Tensor:
    """(N,) index of the joined source video of each row of the track (0 for one video)."""
    frames = torch.tensor([p.frame for p in track.poses])
    starts = torch.tensor(sorted(track.segment_starts or [1]))
    return (torch.searchsorted(starts, frames, right=True) - 1).clamp(min=0)


def load_clip(
    root: Path,
    track: PersonTrack,
    image_size: int,
    source_size: int,
    normaliser: PoseNormaliser,
    audio_stats: tuple[float, float],
    mel: np.ndarray,
    camera_distance: float,
    expression_dim: int,
    motion_dim: int = 0,
    motion_shape: str = "expression",
    mask_region: str = "mouth",
    motion_per_take: bool = False,
) -> ClipTensors:
    frames = [p.frame for p in track.poses]
    row_of = {frame: row for row, frame in enumerate(frames)}
    train_rows = [row_of[f] for f in track.train_frames if f in row_of]
    held_out_rows = [row_of[f] for f in track.held_out_frames if f in row_of]
    if not train_rows:
        raise InputError(f"person {track.person!r} has no training frames in metadata/split.json")
    segment = segment_of(track)
    return ClipTensors(
        track=track,
        images=load_images(root, track.person, frames, image_size),
        masks=load_masks(root, track.person, frames, image_size),
        mouth=mouth_boxes(track, source_size),
        hidden=hidden_boxes(track, source_size, mask_region),
        conditions=frame_conditions(track, normaliser, camera_distance, expression_dim),
        windows=audio_windows(mel, max(frames), *audio_stats),
        train_rows=train_rows,
        held_out_rows=held_out_rows,
        motion=motion_codes(track, train_rows, motion_dim, motion_shape,
                            segment if motion_per_take else None),
        segment=segment,
    )


def model_inputs(
    clip: ClipTensors, rows: torch.Tensor, reference_rows: torch.Tensor, neighbours: int,
    device: torch.device,
) -> dict[str, torch.Tensor]:
    """The TalkingHead keyword arguments for target frames `rows` drawn over `reference_rows`."""
    c = clip.conditions
    frame_index = torch.tensor([clip.track.poses[r].frame - 1 for r in rows.tolist()])
    inputs = {
        "audio": neighbour_windows(clip.windows, frame_index, neighbours),
        "eye": c.blink[rows],
        "rotation": c.rotation[rows],
        "offset": c.offset[rows],
        "focal": c.focal[rows],
        "reference": clip.images[reference_rows].float() / 255.0,
        "reference_mouth": clip.hidden[reference_rows],
        "reference_rotation": c.rotation[reference_rows],
        "reference_offset": c.offset[reference_rows],
        "reference_focal": c.focal[reference_rows],
        "expression": c.expression[rows],
        "take": clip.segment[rows],
    }
    return {name: value.to(device, non_blocking=True) for name, value in inputs.items()}


def nearest_pose_rows(
    clip: ClipTensors, rows: list[int], candidates: int, min_gap: int
) -> torch.Tensor:
    """(len(rows), candidates) training rows nearest in head pose to each row, nearest first.

    Pose distance: rotation matrices (Frobenius) plus offsets, both in head units. Training
    rows within `min_gap` frames of the row are skipped, so a reference never shows (almost)
    the target's own mouth, and so are rows of another joined source video.
    """
    c = clip.conditions
    train = torch.tensor(clip.train_rows)
    pose = torch.cat([c.rotation.flatten(1), c.offset, (c.focal - 1.0).unsqueeze(1)], dim=1)
    query = torch.tensor(rows)
    distance = torch.cdist(pose[query], pose[train])  # (R, T)
    frames = torch.tensor([p.frame for p in clip.track.poses])
    too_close = (frames[query][:, None] - frames[train][None, :]).abs() < min_gap
    distance = distance.masked_fill(too_close | clip.across_videos(query, train), float("inf"))
    k = min(candidates, len(train))
    order = distance.topk(k, dim=1, largest=False).indices
    fallback = distance.isinf().all(dim=1)  # a clip shorter than the gap: any frame will do
    order[fallback] = torch.arange(k)
    return train[order]
