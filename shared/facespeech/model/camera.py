"""Rays of a pinhole camera looking at the canonical head (OpenCV axes: x right, y down, z forward).

The head sits at the origin of its canonical frame; the camera is at the origin of camera space
and the head centre at (0, 0, camera_distance) + offset. Points map as
x_cam = R x_canonical + centre, so rays go back to canonical space with R^T.
"""

from __future__ import annotations

import torch


def head_rays(
    rotation: torch.Tensor,
    offset: torch.Tensor,
    focal: torch.Tensor,
    size: int,
    camera_distance: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-pixel rays in canonical head space.

    rotation (B, 3, 3) canonical->camera, offset (B, 3) head centre shift in head units,
    focal (B,) in crop-normalised units (focal pixels / crop side).
    Returns origins (B, size*size, 3) and directions (B, size*size, 3) with unit z in camera
    space, so a ray parameter t is the camera depth.
    """
    batch = rotation.shape[0]
    pixel = (torch.arange(size, device=rotation.device, dtype=rotation.dtype) + 0.5) / size - 0.5
    v, u = torch.meshgrid(pixel, pixel, indexing="ij")
    dirs_cam = torch.stack([u.flatten(), v.flatten(), torch.ones_like(u).flatten()], dim=-1)
    dirs_cam = dirs_cam.expand(batch, -1, -1) / torch.stack(
        [focal, focal, torch.ones_like(focal)], dim=-1
    ).unsqueeze(1)  # (B, P, 3)
    centre = offset.clone()
    centre[:, 2] = centre[:, 2] + camera_distance
    # canonical = R^T (x_cam - centre); for row vectors: (x_cam - centre) @ R
    origins = (-centre).unsqueeze(1) @ rotation  # (B, 1, 3)
    directions = dirs_cam @ rotation  # (B, P, 3)
    return origins.expand_as(directions), directions


def box_masks(boxes: torch.Tensor, size: int) -> torch.Tensor:
    """(B, 4) boxes in [0, 1] -> (B, 1, size, size) 0/1 masks."""
    grid = (torch.arange(size, device=boxes.device, dtype=torch.float32) + 0.5) / size
    inside_x = (grid >= boxes[:, 0:1]) & (grid <= boxes[:, 2:3])  # (B, size)
    inside_y = (grid >= boxes[:, 1:2]) & (grid <= boxes[:, 3:4])
    return (inside_y[:, :, None] & inside_x[:, None, :]).unsqueeze(1).float()
