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
    # pixel centres in crop-normalised units, centre 0: half grid_sample's coordinates
    u, v = (pixel_grid(size, 1, rotation.device)[0].to(rotation.dtype) / 2).unbind(-1)
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


def reference_flow(
    origins: torch.Tensor,
    directions: torch.Tensor,
    depth: torch.Tensor,
    rotation: torch.Tensor,
    offset: torch.Tensor,
    focal: torch.Tensor,
    camera_distance: float,
) -> torch.Tensor:
    """Where each target pixel's surface point lies in another view of the head.

    origins, directions (B, P, 3): the target's rays in canonical space (head_rays, P = size²);
    depth (B, P): camera depth of the surface along each ray; rotation, offset, focal: the other
    view's pose. Returns (B, P, 2): the point's position in that view's crop, in grid_sample's
    normalised coordinates (-1 and 1 are the crop's edges).
    """
    canonical = origins + directions * depth.unsqueeze(-1)  # (B, P, 3)
    centre = offset.clone()
    centre[:, 2] = centre[:, 2] + camera_distance
    camera = canonical @ rotation.transpose(1, 2) + centre.unsqueeze(1)  # x_cam = R x + c
    z = camera[..., 2:].clamp_min(1e-3)
    return 2.0 * focal.view(-1, 1, 1) * camera[..., :2] / z  # crop-normalised, centre 0


def pixel_grid(size: int, batch: int, device: torch.device) -> torch.Tensor:
    """(B, size, size, 2) grid_sample coordinates of the pixel centres: the identity warp."""
    pixel = (torch.arange(size, device=device, dtype=torch.float32) + 0.5) / size * 2.0 - 1.0
    v, u = torch.meshgrid(pixel, pixel, indexing="ij")
    return torch.stack([u, v], dim=-1).expand(batch, -1, -1, -1)
