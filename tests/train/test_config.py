"""Presets are TrainConfig instances; overrides are validated with readable errors."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from facespeech.model import TalkingHead
from facespeech.train import PRESETS, TrainConfig


def test_presets_include_tiny_fast_quality_and_build() -> None:
    assert {"tiny", "fast", "quality"} <= set(PRESETS)
    for name, preset in PRESETS.items():
        model = TalkingHead(preset.to_model_config(expression_dim=4))
        assert sum(p.numel() for p in model.parameters()) > 0, name
    assert PRESETS["fast"].image_size == PRESETS["quality"].image_size == 512


def test_quality_is_fast_trained_longer() -> None:
    fast, quality = PRESETS["fast"], PRESETS["quality"]
    assert quality.steps > fast.steps
    assert quality.model_dump(exclude={"steps"}) == fast.model_dump(exclude={"steps"})


def test_from_preset_applies_overrides() -> None:
    config = TrainConfig.from_preset("tiny", {"steps": 7, "lr": 1e-4})
    assert (config.steps, config.lr, config.image_size) == (7, 1e-4, PRESETS["tiny"].image_size)


def test_unknown_preset_names_the_choices() -> None:
    with pytest.raises(ValueError, match="unknown preset 'huge'.*tiny"):
        TrainConfig.from_preset("huge")


@pytest.mark.parametrize("overrides", [
    {"no_such_field": 1},
    {"steps": 0},
    {"lr": -1.0},
    {"image_size": 128, "render_size": 48},  # not a power-of-two ratio
])
def test_bad_overrides_are_rejected(overrides: dict[str, object]) -> None:
    with pytest.raises(ValidationError):
        TrainConfig.from_preset("tiny", overrides)
