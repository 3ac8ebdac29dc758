"""DDP set-up for torchrun; the same code runs as a single process with world size 1."""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class Dist:
    rank: int
    world_size: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def pick_device(preference: str) -> torch.device:
    if preference == "cuda" or (preference == "auto" and torch.cuda.is_available()):
        return torch.device("cuda")
    return torch.device("cpu")


def autocast(device: torch.device) -> contextlib.AbstractContextManager[Any]:
    """bf16 autocast on CUDA; the CPU path stays fp32 (CPU bf16 is slow and less accurate)."""
    if device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def setup(device_preference: str) -> Dist:
    """Join the torchrun process group when its variables are set (a library reads them here,
    not Settings, because torchrun is their only writer)."""
    if "RANK" not in os.environ or "WORLD_SIZE" not in os.environ:
        return Dist(0, 1, pick_device(device_preference))
    device = pick_device(device_preference)
    if device.type == "cuda":
        local_rank = int(os.environ.get("LOCAL_RANK", 0))
        torch.cuda.set_device(local_rank)
        device = torch.device("cuda", local_rank)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return Dist(dist.get_rank(), dist.get_world_size(), device)


def mean_across_ranks(value: torch.Tensor, world: Dist) -> torch.Tensor:
    """Average a tensor over all ranks (a no-op with one)."""
    if world.world_size == 1:
        return value
    value = value.detach().clone()
    dist.all_reduce(value)
    return value / world.world_size


def barrier(world: Dist) -> None:
    if world.world_size > 1:
        dist.barrier()


def teardown(world: Dist) -> None:
    if world.world_size > 1 and dist.is_initialized():
        dist.destroy_process_group()
