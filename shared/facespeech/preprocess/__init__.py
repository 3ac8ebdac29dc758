"""Talking video (or dataset archive) -> the dataset layout of facespeech.dataset.

The names below load on first use: training and rendering import `audio_features` from this
package and must not pay for (or need) mediapipe and the video pipeline.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from facespeech.preprocess.archive import import_archive
    from facespeech.preprocess.config import PreprocessConfig, PreprocessReport
    from facespeech.preprocess.pipeline import run

__all__ = ["PreprocessConfig", "PreprocessReport", "import_archive", "run"]
_HOMES = {
    "PreprocessConfig": "config",
    "PreprocessReport": "config",
    "import_archive": "archive",
    "run": "pipeline",
}


def __getattr__(name: str) -> Any:
    if name not in _HOMES:
        raise AttributeError(name)
    return getattr(importlib.import_module(f"facespeech.preprocess.{_HOMES[name]}"), name)
