"""The dataset layout of DESIGN.md: what preprocessing writes and training/render read.

    images/<person>/00001.jpg        aligned square face crops, 25 fps
    audio/<person>/<clip>.wav        16 kHz mono
    features/<person>/<clip>.npy     log-mel, float16, (mel_frames, N_MELS) at MEL_HZ
    masks/<person>/00001.png         face-region mask in crop pixels (uint8, 255 = face)
    semantic/<person>/00001.png      (optional) label map in crop pixels: LABEL_* below
    metadata/poses.json              per frame: rotation, translation, focal, crop box
    metadata/expressions.json        per frame: blink, mouth opening, expression code, lip
                                     code (lips: the lips' shape besides their opening) and
                                     the 3DMM expression coefficients when fitted (bfm)
    metadata/landmarks.json          per frame: 2D (+3D) landmarks in crop pixels
    metadata/landmarks3d/<person>.npy  (optional) float32 (frames, K, 3) landmarks in crop
                                     pixels (z: relative depth, same scale), poses.json order
    metadata/bfm/<person>.npz        (optional) Basel Face Model fit, see preprocess.bfm
    metadata/landmarks68.json        (optional) per frame: 68 face-alignment points, crop px
    metadata/split.json              per person: train and held-out frame numbers
    metadata/info.json               fps, image size, persons, clips, source, segments
                                     (first frame of each video, when several takes of
                                     a person were joined into one clip)
    background.jpg                   (optional) background plate, whole source frame
    report.json, contact_sheet.png   (optional) preprocessing report and a visual check

Frame numbers are 1-based and match the image file names.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

FPS = 25
SAMPLE_RATE = 16_000
N_MELS = 80
MEL_HZ = 100  # hop 160 at 16 kHz: four mel frames per video frame
LAYOUT_VERSION = 1
# Values of the semantic label map (semantic/<person>/*.png).
LABEL_BACKGROUND, LABEL_FACE, LABEL_MOUTH, LABEL_NECK_TORSO, LABEL_OTHER_PERSON = 0, 1, 2, 3, 4


@dataclass
class FramePose:
    frame: int
    rotation: list[list[float]]  # 3x3, head-to-camera
    translation: list[float]  # 3, in crop-normalised units
    focal: float  # in crop pixels
    crop_box: list[float]  # x, y, size: the square in source-video pixels


@dataclass
class FrameExpression:
    frame: int
    blink: float  # 0 open .. 1 closed
    mouth_open: float  # inner-lip gap / face height
    code: list[float] = field(default_factory=list)  # compact expression code
    # the lips' shape besides their opening (preprocess.pose.lip_codes); older datasets lack it
    lips: list[float] | None = None
    # Basel Face Model expression coefficients, when the 3DMM was fitted (preprocess.bfm)
    bfm: list[float] | None = None


@dataclass
class PersonTrack:
    person: str
    clip: str
    poses: list[FramePose]
    expressions: list[FrameExpression]
    # per frame, (K, 2) in crop pixels; a writer may give an (N, K, 2) array instead
    landmarks: list[list[list[float]]] | np.ndarray
    train_frames: list[int]
    held_out_frames: list[int]
    # (N, K, 3) in crop pixels (z: relative depth in the same scale); optional
    landmarks_3d: np.ndarray | None = None
    # per frame, (68, 2) in crop pixels from the face-alignment backend; optional
    landmarks_68: list[list[list[float]]] | np.ndarray | None = None
    # first frame number of each joined source video (frames before the next one's start
    # belong to it); [1] for a dataset made from one video
    segment_starts: list[int] = field(default_factory=lambda: [1])


@dataclass
class DatasetInfo:
    fps: int
    image_size: int
    persons: list[str]
    clips: dict[str, str]  # person -> clip name (audio/<person>/<clip>.wav)
    source: str = ""
    dropped_frames: dict[str, list[int]] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    version: int = LAYOUT_VERSION
    # person -> first frame number of each source video when several were joined ([1]: one)
    segments: dict[str, list[int]] = field(default_factory=dict)


def image_path(root: Path, person: str, frame: int) -> Path:
    return root / "images" / person / f"{frame:05d}.jpg"


def mask_path(root: Path, person: str, frame: int) -> Path:
    return root / "masks" / person / f"{frame:05d}.png"


def semantic_path(root: Path, person: str, frame: int) -> Path:
    return root / "semantic" / person / f"{frame:05d}.png"


def background_path(root: Path) -> Path:
    return root / "background.jpg"


def audio_path(root: Path, person: str, clip: str) -> Path:
    return root / "audio" / person / f"{clip}.wav"


def features_path(root: Path, person: str, clip: str) -> Path:
    return root / "features" / person / f"{clip}.npy"


def _write_json(path: Path, payload: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(payload, separators=(",", ":")))
    tmp.replace(path)


def write_metadata(root: Path, info: DatasetInfo, tracks: list[PersonTrack]) -> None:
    meta = root / "metadata"
    _write_json(meta / "info.json", asdict(info))
    _write_json(meta / "poses.json", {t.person: [asdict(p) for p in t.poses] for t in tracks})
    _write_json(meta / "expressions.json",
                {t.person: [_expression_json(e) for e in t.expressions] for t in tracks})
    _write_json(meta / "landmarks.json", {t.person: _rounded(t.landmarks) for t in tracks})
    for track in tracks:
        if track.landmarks_3d is not None:
            _write_npy(landmarks_3d_path(root, track.person),
                       np.asarray(track.landmarks_3d, dtype=np.float32))
    with_68 = {t.person: _rounded(t.landmarks_68) for t in tracks if t.landmarks_68 is not None}
    if with_68:
        _write_json(meta / "landmarks68.json", with_68)
    _write_json(
        meta / "split.json",
        {t.person: {"train": t.train_frames, "held_out": t.held_out_frames} for t in tracks},
    )


def _expression_json(expression: FrameExpression) -> dict[str, Any]:
    return {k: v for k, v in asdict(expression).items() if v is not None}


def _rounded(landmarks: list[list[list[float]]] | np.ndarray) -> list[list[list[float]]]:
    if isinstance(landmarks, np.ndarray):  # numpy rounds millions of values far faster
        return np.round(landmarks.astype(np.float64), 2).tolist()  # type: ignore[no-any-return]
    return [[[round(c, 2) for c in pt] for pt in f] for f in landmarks]


def _write_npy(path: Path, array: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp.npy")
    np.save(tmp, array)
    tmp.replace(path)


def landmarks_3d_path(root: Path, person: str) -> Path:
    return root / "metadata" / "landmarks3d" / f"{person}.npy"


def bfm_path(root: Path, person: str) -> Path:
    """Basel Face Model fit (optional): identity, albedo, per-frame expression/pose/light."""
    return root / "metadata" / "bfm" / f"{person}.npz"


def read_landmarks_3d(root: Path, person: str) -> np.ndarray | None:
    """(frames, K, 3) float32 landmarks in crop pixels, in poses.json order; None if absent."""
    path = landmarks_3d_path(root, person)
    return np.load(path) if path.is_file() else None


def read_info(root: Path) -> DatasetInfo:
    return DatasetInfo(**json.loads((root / "metadata" / "info.json").read_text()))


def read_tracks(root: Path) -> list[PersonTrack]:
    info = read_info(root)
    meta = root / "metadata"
    poses = json.loads((meta / "poses.json").read_text())
    expressions = json.loads((meta / "expressions.json").read_text())
    landmarks = json.loads((meta / "landmarks.json").read_text())
    split = json.loads((meta / "split.json").read_text())
    return [
        PersonTrack(
            person=person,
            clip=info.clips[person],
            poses=[FramePose(**p) for p in poses[person]],
            expressions=[FrameExpression(**e) for e in expressions[person]],
            landmarks=landmarks[person],
            train_frames=split[person]["train"],
            held_out_frames=split[person]["held_out"],
            segment_starts=info.segments.get(person, [1]),
        )
        for person in info.persons
    ]


def split_frames_only(track: PersonTrack) -> PersonTrack:
    """The track cut to its training and held-out frames: a view that trains on part of a
    joined dataset (bench.split_view) keeps the other video's frames in its metadata, and
    loading their images for nothing costs gigabytes."""
    wanted = set(track.train_frames) | set(track.held_out_frames)
    keep = [row for row, pose in enumerate(track.poses) if pose.frame in wanted]
    if len(keep) == len(track.poses):
        return track

    def rows_of(per_frame: Any) -> Any:
        if per_frame is None:
            return None
        return per_frame[keep] if isinstance(per_frame, np.ndarray) else [
            per_frame[row] for row in keep]

    return replace(
        track, poses=rows_of(track.poses), expressions=rows_of(track.expressions),
        landmarks=rows_of(track.landmarks), landmarks_3d=rows_of(track.landmarks_3d),
        landmarks_68=rows_of(track.landmarks_68),
    )


def load_features(root: Path, person: str, clip: str) -> np.ndarray:
    """Log-mel of a clip, (mel_frames, N_MELS) float32."""
    return np.load(features_path(root, person, clip)).astype(np.float32)
