"""Refit the audio -> motion regressors of a trained motion model (CPU is enough), keeping
its renderer: the same renderer scored with different audio halves.

    python -m bench.refit_motion MODEL.pt DATASET OUT.pt --overrides '{"motion_smoothing": 2}'

The renderer's weights are copied unchanged; the regressors (as many as `motion_regressors`
says) start from fresh weights and are fitted by train.motion.fit_motion with the
checkpoint's training config and the overrides. OUT is then scored with `facespeech eval`.
"""

from __future__ import annotations

import json
from dataclasses import asdict, replace
from pathlib import Path

import torch
import typer

from facespeech.dataset import load_features, read_tracks
from facespeech.model import ModelConfig, TalkingHead
from facespeech.model.head import is_regressor_key
from facespeech.train import TrainConfig, checkpoints
from facespeech.train.data import PoseNormaliser, load_clip
from facespeech.train.motion import fit_motion

# The model's fields only the regressors depend on: in a motion model only they hear the
# audio, so the overrides may change these and the renderer still loads.
REGRESSOR_FIELDS = ("motion_regressors", "motion_smoothing", "audio_neighbours", "motion_pooling")


def main(checkpoint: Path, dataset: Path, out: Path, overrides: str = "{}") -> None:
    state = checkpoints.load(checkpoint)
    config = TrainConfig.model_validate({**state["config"], **json.loads(overrides)})
    model_config = replace(ModelConfig(**state["model_config"]),
                           **{name: getattr(config, name) for name in REGRESSOR_FIELDS})
    assert model_config.motion_dim, f"{checkpoint} has no audio -> motion regressor"
    torch.manual_seed(config.seed)
    model = TalkingHead(model_config)
    renderer = {key: value.float() for key, value in state["model"].items()
                if not is_regressor_key(key)}
    missing, unexpected = model.load_state_dict(renderer, strict=False)
    assert not unexpected and all(key.startswith("regressors.") for key in missing)
    data = state["data"]
    track = next(t for t in read_tracks(dataset) if t.person == data["person"])
    clip = load_clip(  # images small: only the audio and the tracked codes are fitted
        dataset, track, 32, data["source_image_size"], PoseNormaliser(**data["pose_normaliser"]),
        (data["audio_mean"], data["audio_std"]), load_features(dataset, track.person, track.clip),
        model_config.camera_distance, model_config.expression_dim, model_config.motion_dim,
        model_config.motion_shape, motion_per_take=model_config.motion_per_take,
    )
    metrics = fit_motion(model, clip, config, torch.device("cpu"))
    dtype = next(iter(state["model"].values())).dtype
    state["model"] = {key: value.to(dtype) for key, value in model.state_dict().items()}
    state["model_config"] = asdict(model_config)
    state["config"] = config.model_dump()
    state["metrics"] = {**state.get("metrics", {}), **metrics}
    checkpoints.save_atomic(state, out)
    print(json.dumps(metrics, indent=1))


if __name__ == "__main__":
    typer.run(main)
