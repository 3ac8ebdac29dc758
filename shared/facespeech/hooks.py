"""The two hooks every long library function takes from its caller (StyleGAN3 style)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Progress:
    stage: str  # e.g. "decode", "track", "train", "render"
    fraction: float  # 0..1 within the whole call
    message: str = ""
    metrics: Mapping[str, float] = field(default_factory=dict)


ProgressFn = Callable[[Progress], None]
StopFn = Callable[[], bool]


class Stopped(Exception):
    """Raised inside a library call when should_stop() said yes; state was saved first."""


def no_progress(_: Progress) -> None:
    return None


def never_stop() -> bool:
    return False
