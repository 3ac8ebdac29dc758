"""The reference frames a render pastes the face onto, and their poses, blinks and masks.

They come from the training dataset, or from the model file itself: `embed` stores a bounded
number of consecutive training crops there (as JPEG) with their conditions, so a model file
alone is enough to render (no dataset download on a cold render worker, no `--dataset`).
"""

from __future__ import annotations

import io
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from facespeech.dataset import load_features, read_tracks
from facespeech.errors import InputError
from facespeech.model import ModelConfig
from facespeech.render.features import silence_mel
from facespeech.train import checkpoints
from facespeech.train.data import (
    PoseNormaliser,
    frame_conditions,
    hidden_boxes,
    load_images,
    load_masks,
    load_person_masks,
)

# 10 s at 25 fps: plenty of natural head motion to ping-pong over, about 10 MB of JPEG at
# 512^2 in the model file, 200 MB of uint8 crops on the GPU at 512^2 (800 MB at 1024^2).
MAX_REFERENCE_FRAMES = 250
JPEG_QUALITY = 92
CHECKPOINT_KEY = "render_reference"


@dataclass
class ReferenceSet:
    """N consecutive training frames, rows in playback order."""

    images: torch.Tensor  # (N, 3, S, S) uint8 crops at the model's image size
    masks: torch.Tensor  # (N, 1, S, S) uint8 face masks, 255 = face
    person: torch.Tensor  # (N, 1, S, S) uint8, 255 = the person: a transparent render's alpha
    # (N, 4) in [0, 1]: the box the model hides of each crop and renders paste (with the face
    # mask): its mouth, or its lower face (ModelConfig.mask_region)
    mouth: torch.Tensor
    rotation: torch.Tensor  # (N, 3, 3)
    offset: torch.Tensor  # (N, 3)
    focal: torch.Tensor  # (N,)
    blink: torch.Tensor  # (N, 1)
    expression: torch.Tensor  # (N, E)

    def __len__(self) -> int:
        return self.images.shape[0]

    def to(self, device: torch.device) -> ReferenceSet:
        return ReferenceSet(**{f.name: getattr(self, f.name).to(device) for f in fields(self)})

    def nbytes(self) -> int:
        return sum(getattr(self, f.name).nbytes for f in fields(self))


def from_dataset(
    dataset_dir: Path, data: dict[str, Any], model_config: ModelConfig,
    max_frames: int = MAX_REFERENCE_FRAMES,
) -> ReferenceSet:
    """The first `max_frames` training frames of the model's person in `dataset_dir`, from
    its main video when several were joined: one background and framing, no cut."""
    track = next((t for t in read_tracks(dataset_dir) if t.person == data["person"]), None)
    if track is None:
        raise InputError(f"dataset {dataset_dir} has no person {data['person']!r}")
    row_of = {pose.frame: row for row, pose in enumerate(track.poses)}
    train = sorted(track.train_frames)
    main_video = [f for f in train if f >= max(track.segment_starts)]
    rows = [row_of[f] for f in main_video or train if f in row_of][:max_frames]
    if not rows:
        raise InputError(f"dataset {dataset_dir} has no training frames for {track.person!r}")
    conditions = frame_conditions(track, PoseNormaliser(**data["pose_normaliser"]),
                                  model_config.camera_distance, model_config.expression_dim)
    frames = [track.poses[r].frame for r in rows]
    size = model_config.image_size
    index = torch.tensor(rows)
    masks = load_masks(dataset_dir, track.person, frames, size)
    person = load_person_masks(dataset_dir, track.person, frames, size)
    return ReferenceSet(
        images=load_images(dataset_dir, track.person, frames, size),
        masks=masks, person=masks.clone() if person is None else person,
        mouth=hidden_boxes(track, data["source_image_size"], model_config.mask_region)[index],
        rotation=conditions.rotation[index], offset=conditions.offset[index],
        focal=conditions.focal[index], blink=conditions.blink[index],
        expression=conditions.expression[index],
    )


def from_checkpoint(state: dict[str, Any]) -> ReferenceSet | None:
    """The reference stored by `embed`, or None for a model file without one."""
    packed = state.get(CHECKPOINT_KEY)
    if packed is None:
        return None
    images = torch.stack([_decode(jpeg, "RGB") for jpeg in packed["images"]])
    masks = torch.stack([_decode(jpeg, "L") for jpeg in packed["masks"]])
    # model files embedded before person masks existed: the face is the person
    person = (torch.stack([_decode(jpeg, "L") for jpeg in packed["person"]])
              if "person" in packed else masks.clone())
    tensors = {name: packed[name] for name in
               ("mouth", "rotation", "offset", "focal", "blink", "expression")}
    return ReferenceSet(images=images, masks=masks, person=person, **tensors)


def is_embedded(model_path: Path) -> bool:
    return CHECKPOINT_KEY in checkpoints.load(model_path)


def embed(model_path: Path, dataset_dir: Path, max_frames: int = MAX_REFERENCE_FRAMES) -> None:
    """Store the reference frames of `dataset_dir` in the model file (atomically rewritten)."""
    state = checkpoints.load(model_path)
    reference = from_dataset(dataset_dir, state["data"], ModelConfig(**state["model_config"]),
                             max_frames)
    state[CHECKPOINT_KEY] = {
        "images": [_encode(image, "RGB") for image in reference.images],
        "masks": [_encode(mask, "L") for mask in reference.masks],
        "person": [_encode(mask, "L") for mask in reference.person],
        "mouth": reference.mouth, "rotation": reference.rotation, "offset": reference.offset,
        "focal": reference.focal, "blink": reference.blink, "expression": reference.expression,
        "pause_mel": silence_mel(training_mel(dataset_dir, state["data"]["person"])),
    }
    checkpoints.save_atomic(state, model_path)


def training_mel(dataset_dir: Path, person: str) -> np.ndarray | None:
    track = next((t for t in read_tracks(dataset_dir) if t.person == person), None)
    return None if track is None else load_features(dataset_dir, person, track.clip)


def _encode(image: torch.Tensor, mode: str) -> bytes:
    """(C, S, S) uint8 -> JPEG bytes."""
    array = image.permute(1, 2, 0).numpy()
    buffer = io.BytesIO()
    Image.fromarray(array[..., 0] if mode == "L" else array, mode).save(
        buffer, "JPEG", quality=JPEG_QUALITY)
    return buffer.getvalue()


def _decode(jpeg: bytes, mode: str) -> torch.Tensor:
    with Image.open(io.BytesIO(jpeg)) as image:
        array = np.array(image.convert(mode))
    tensor = torch.from_numpy(array)
    return tensor.unsqueeze(0) if mode == "L" else tensor.permute(2, 0, 1)
