"""SyncNet lip-sync scores (Chung & Zisserman 2016, "Out of time"), as syncnet_python computes
them and talking-head papers report them: LSE-D (the audio-video embedding distance at the
best offset; lower is better) and LSE-C (confidence: the median distance over offsets minus
that minimum; higher is better), plus the offset itself.

Nothing is downloaded: `SyncNet.load` takes a local `syncnet_v2.model` (syncnet_python's
weights; module names below match its keys). Faces are cropped the way its pipeline crops a
face track (a box from the face's extent, widened and lowered to take in the chin), resized
to 224², 5 frames per window; audio is 13 MFCCs at 100 Hz (python_speech_features, as
syncnet_python uses), 20 per window.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

FPS = 25
SAMPLE_RATE = 16_000
WINDOW = 5  # video frames per embedding
MFCC_PER_FRAME = 4  # 100 Hz MFCC over 25 fps
MAX_SHIFT = 15  # frames searched either way
CROP = 224
# syncnet_python's crop around a face box of half-side b: 1.4 b either side horizontally,
# b above the centre and 1.8 b below it.
CROP_MARGIN = 0.4


def _conv(conv: nn.Module, channels: int, pool: nn.Module | None = None) -> list[nn.Module]:
    norm = nn.BatchNorm2d(channels) if isinstance(conv, nn.Conv2d) else nn.BatchNorm3d(channels)
    return [conv, norm, nn.ReLU(inplace=True), *([pool] if pool is not None else [])]


def _head() -> nn.Sequential:
    return nn.Sequential(nn.Linear(512, 512), nn.BatchNorm1d(512), nn.ReLU(), nn.Linear(512, 1024))


class SyncNet(nn.Module):
    """Audio (B, 1, 13, 20) MFCC windows and lips (B, 3, 5, 224, 224) BGR 0-255 -> (B, 1024)
    embeddings that lie close when the mouth moves with the sound."""

    def __init__(self) -> None:
        super().__init__()
        self.netcnnaud = nn.Sequential(
            *_conv(nn.Conv2d(1, 64, 3, padding=1), 64, nn.MaxPool2d(1, 1)),
            *_conv(nn.Conv2d(64, 192, 3, padding=1), 192, nn.MaxPool2d(3, (1, 2))),
            *_conv(nn.Conv2d(192, 384, 3, padding=1), 384),
            *_conv(nn.Conv2d(384, 256, 3, padding=1), 256),
            *_conv(nn.Conv2d(256, 256, 3, padding=1), 256, nn.MaxPool2d(3, 2)),
            *_conv(nn.Conv2d(256, 512, (5, 4)), 512),
        )
        self.netfcaud = _head()
        self.netcnnlip = nn.Sequential(
            *_conv(nn.Conv3d(3, 96, (5, 7, 7), (1, 2, 2)), 96, nn.MaxPool3d((1, 3, 3), (1, 2, 2))),
            *_conv(nn.Conv3d(96, 256, (1, 5, 5), (1, 2, 2), (0, 1, 1)), 256,
                   nn.MaxPool3d((1, 3, 3), (1, 2, 2), (0, 1, 1))),
            *_conv(nn.Conv3d(256, 256, (1, 3, 3), padding=(0, 1, 1)), 256),
            *_conv(nn.Conv3d(256, 256, (1, 3, 3), padding=(0, 1, 1)), 256),
            *_conv(nn.Conv3d(256, 256, (1, 3, 3), padding=(0, 1, 1)), 256,
                   nn.MaxPool3d((1, 3, 3), (1, 2, 2))),
            *_conv(nn.Conv3d(256, 512, (1, 6, 6)), 512),
        )
        self.netfclip = _head()

    @classmethod
    def load(cls, path: Path) -> SyncNet:
        model = cls()
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
            missing, unexpected = model.load_state_dict(state, strict=False)
        except (RuntimeError, AttributeError, TypeError) as error:
            raise ValueError(f"{path} does not hold SyncNet (syncnet_v2) weights: {error}"
                             ) from error
        # weights saved by older PyTorch lack the batch-norm step counters; nothing else may
        missing = [key for key in missing if not key.endswith("num_batches_tracked")]
        if missing or unexpected:
            raise ValueError(f"{path} does not hold SyncNet (syncnet_v2) weights: missing "
                             f"{missing[:3]}, unexpected {unexpected[:3]}")
        return model.eval().requires_grad_(False)

    def embed_audio(self, mfcc: torch.Tensor) -> torch.Tensor:
        return self.netfcaud(self.netcnnaud(mfcc).flatten(1))

    def embed_lips(self, frames: torch.Tensor) -> torch.Tensor:
        return self.netfclip(self.netcnnlip(frames).flatten(1))


@dataclass(frozen=True)
class SyncScore:
    offset_frames: int  # positive: the audio leads the video (syncnet_python's sign)
    distance: float  # LSE-D
    confidence: float  # LSE-C
    frames: int


def mfcc(audio: np.ndarray) -> np.ndarray:
    """16 kHz mono -> (13, N) MFCCs at 100 Hz, python_speech_features' defaults."""
    import python_speech_features

    return np.asarray(python_speech_features.mfcc(audio, SAMPLE_RATE), dtype=np.float32).T


def face_crop_boxes(landmarks: list[np.ndarray | None], smooth: int = 13) -> np.ndarray:
    """Per frame (x0, y0, x1, y1) of syncnet_python's crop (pixels; may reach past the frame),
    from the extent of each frame's landmarks; untracked frames take the nearest tracked
    box; centres and sizes are median-filtered over `smooth` frames, as its face tracker
    filters the detector's boxes."""
    from scipy.signal import medfilt

    tracked = [i for i, points in enumerate(landmarks) if points is not None]
    if not tracked:
        raise ValueError("no face was tracked in any frame")
    extents = np.zeros((len(landmarks), 3))  # centre x, centre y, half side
    for i in range(len(landmarks)):
        points = landmarks[min(tracked, key=lambda t: abs(t - i))]
        assert points is not None
        low, high = points.min(axis=0), points.max(axis=0)
        extents[i] = (*((low + high) / 2), (high - low).max() / 2)
    if len(landmarks) >= smooth:
        extents = np.stack([medfilt(column, smooth) for column in extents.T], axis=1)
    cx, cy, b = extents.T
    return np.stack([cx - b * (1 + CROP_MARGIN), cy - b,
                     cx + b * (1 + CROP_MARGIN), cy + b * (1 + 2 * CROP_MARGIN)], axis=1)


def crop_faces(frames: torch.Tensor, boxes: np.ndarray) -> torch.Tensor:
    """uint8 (N, 3, H, W) RGB + boxes -> float (N, 3, 224, 224) BGR in 0-255 (what the
    network was trained on: OpenCV frames), outside the frame padded grey as
    syncnet_python pads with 110."""
    size = frames.shape[-1]
    # boxes in [-1, 1] coordinates for an affine sampling grid
    x0, y0, x1, y1 = (torch.tensor(boxes, dtype=torch.float32) / size * 2 - 1).unbind(1)
    theta = torch.zeros(len(boxes), 2, 3)
    theta[:, 0, 0], theta[:, 0, 2] = (x1 - x0) / 2, (x1 + x0) / 2
    theta[:, 1, 1], theta[:, 1, 2] = (y1 - y0) / 2, (y1 + y0) / 2
    grid = F.affine_grid(theta, [len(boxes), 3, CROP, CROP], align_corners=False)
    images = frames.float() - 110.0
    crops = F.grid_sample(images, grid, mode="bilinear", padding_mode="zeros",
                          align_corners=False) + 110.0
    return crops.flip(1)  # RGB -> BGR


@torch.inference_mode()
def sync_score(model: SyncNet, faces: torch.Tensor, audio: np.ndarray, batch: int = 32,
               device: torch.device | None = None) -> SyncScore:
    """faces (N, 3, 224, 224) from crop_faces at 25 fps, audio 16 kHz mono over the same
    time -> the offset, LSE-D and LSE-C over the whole sequence."""
    device = device or torch.device("cpu")
    model = model.to(device)
    coefficients = torch.from_numpy(mfcc(audio))  # (13, M)
    last = min(len(faces), len(audio) * FPS // SAMPLE_RATE) - WINDOW
    if last < 2 * MAX_SHIFT + 1:
        raise ValueError(f"{len(faces)} frames are too few for a SyncNet score "
                         f"(at least {2 * MAX_SHIFT + 1 + WINDOW})")
    video, sound = [], []
    for start in range(0, last, batch):
        index = range(start, min(last, start + batch))
        clips = torch.stack([faces[i : i + WINDOW].transpose(0, 1) for i in index])
        video.append(model.embed_lips(clips.to(device)).cpu())
        windows = torch.stack([coefficients[:, i * MFCC_PER_FRAME : i * MFCC_PER_FRAME + 20]
                               for i in index]).unsqueeze(1)
        sound.append(model.embed_audio(windows.to(device)).cpu())
    lips, voice = torch.cat(video), torch.cat(sound)
    padded = F.pad(voice, (0, 0, MAX_SHIFT, MAX_SHIFT))  # zero embeddings beyond the ends
    distances = torch.stack([
        F.pairwise_distance(lips[i : i + 1].expand(2 * MAX_SHIFT + 1, -1),
                            padded[i : i + 2 * MAX_SHIFT + 1])
        for i in range(len(lips))
    ])  # (frames, shifts)
    mean = distances.mean(dim=0)
    best = int(mean.argmin())
    return SyncScore(offset_frames=MAX_SHIFT - best, distance=float(mean[best]),
                     confidence=float(mean.median() - mean[best]), frames=len(lips))
