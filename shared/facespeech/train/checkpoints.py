"""Checkpoint files: atomic writes, zero-padded step names, keep-last-N, newest lookup."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

PATTERN = "step-*.pt"


def checkpoint_path(run_dir: Path, step: int) -> Path:
    return run_dir / "checkpoints" / f"step-{step:09d}.pt"


def save_atomic(payload: dict[str, Any], path: Path) -> None:
    """Write to a temp file beside the target and rename, so a reader never sees half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    torch.save(payload, tmp)
    os.replace(tmp, path)


def newest(run_dir: Path) -> Path | None:
    paths = sorted((run_dir / "checkpoints").glob(PATTERN))
    return paths[-1] if paths else None


def prune(run_dir: Path, keep: int) -> None:
    for old in sorted((run_dir / "checkpoints").glob(PATTERN))[:-keep]:
        old.unlink(missing_ok=True)


def load(path: Path) -> dict[str, Any]:
    return torch.load(path, map_location="cpu", weights_only=False)
