"""Training: `run(dataset_dir, run_dir, config)` with presets `tiny`, `fast`, `quality`."""

from facespeech.train.config import PRESETS, TrainConfig
from facespeech.train.loop import TrainResult, run

__all__ = ["PRESETS", "TrainConfig", "TrainResult", "run"]
