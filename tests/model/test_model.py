"""Shapes and gradients of the talking-head modules."""

from __future__ import annotations

import torch

from facespeech.model import AudioEncoder, AudioSmoother, ModelConfig, TalkingHead, head_rays
from facespeech.model.renderer import volume_render

CONFIG = ModelConfig(image_size=32, render_size=8, plane_resolution=16, hidden=16,
                     feature_dim=8, samples_per_ray=4, upsampler_channels=16, expression_dim=3)


def _inputs(batch: int, config: ModelConfig = CONFIG) -> dict[str, torch.Tensor]:
    return {
        "audio": torch.randn(batch, config.audio_neighbours, config.audio_window, config.n_mels),
        "eye": torch.rand(batch, 1),
        "rotation": torch.eye(3).expand(batch, 3, 3),
        "offset": torch.zeros(batch, 3),
        "focal": torch.full((batch,), 1.2),
        "reference": torch.rand(batch, 3, config.image_size, config.image_size),
        "expression": torch.zeros(batch, config.expression_dim),
    }


def test_audio_encoder_and_smoother_shapes() -> None:
    codes = AudioEncoder(80, 16, 32)(torch.randn(6, 16, 80))
    assert codes.shape == (6, 32)
    assert AudioSmoother(32, 8)(torch.randn(2, 8, 32)).shape == (2, 32)


def test_rays_point_at_the_head() -> None:
    origins, directions = head_rays(torch.eye(3)[None], torch.zeros(1, 3), torch.ones(1), 4, 4.0)
    assert origins.shape == directions.shape == (1, 16, 3)
    assert torch.allclose(origins[0, 0], torch.tensor([0.0, 0.0, -4.0]))
    assert (directions[..., 2] == 1).all()


def test_volume_render_opaque_sample_wins() -> None:
    density = torch.tensor([[[0.0, 1e4, 0.0]]])
    features = torch.tensor([[[[1.0], [2.0], [3.0]]]])
    image, alpha = volume_render(density, features, torch.tensor([[[1.0, 2.0, 3.0]]]))
    assert torch.allclose(image, torch.tensor([[[2.0]]]), atol=1e-3)
    assert torch.allclose(alpha, torch.ones(1, 1), atol=1e-3)


def test_head_shapes_range_and_gradients() -> None:
    model = TalkingHead(CONFIG)
    out = model(**_inputs(2), jitter=True)
    assert out["rgb"].shape == (2, 3, 32, 32)
    assert out["alpha"].shape == (2, 1, 8, 8)
    assert out["residual"].shape == (2, 3, 32, 32)
    rgb = out["rgb"].detach()
    assert 0 <= float(rgb.min()) and float(rgb.max()) <= 1
    out["rgb"].mean().backward()
    assert model.field.planes.grad is not None and model.field.planes.grad.abs().sum() > 0
    assert model.audio_encoder.head.weight.grad is not None


def test_reference_skips_reach_every_scale_and_keep_old_weights_loadable() -> None:
    skips = ModelConfig(**{**CONFIG.__dict__, "reference_skips": True})
    model = TalkingHead(skips)
    inputs = _inputs(2, skips)
    inputs["reference"].requires_grad_(True)
    out = model(**inputs)
    assert out["rgb"].shape == (2, 3, 32, 32)
    out["rgb"].mean().backward()
    encoder = model.upsampler.encoder
    assert encoder is not None
    assert all(level[0].weight.grad.abs().sum() > 0 for level in encoder.levels)
    # a model without skips keeps the layout of checkpoints written before they existed
    plain = TalkingHead(CONFIG).state_dict()
    with_skips = model.state_dict()
    added = set(with_skips) - set(plain)
    assert set(plain) < set(with_skips)
    assert added == {key for key in with_skips if key.startswith("upsampler.encoder.")}
