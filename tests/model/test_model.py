"""Shapes and gradients of the talking-head modules."""

from __future__ import annotations

import torch

from facespeech.model import AudioEncoder, AudioSmoother, ModelConfig, TalkingHead, head_rays
from facespeech.model.camera import pixel_grid, reference_flow
from facespeech.model.head import warp_to_target
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
    image, alpha, _ = volume_render(density, features, torch.tensor([[[1.0, 2.0, 3.0]]]))
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


def test_reference_flow_moves_with_the_reference_head() -> None:
    origins, directions = head_rays(torch.eye(3)[None], torch.zeros(1, 3), torch.full((1,), 1.2),
                                    4, 4.0)
    depth = torch.full((1, 16), 4.0)
    same = reference_flow(origins, directions, depth, torch.eye(3)[None], torch.zeros(1, 3),
                          torch.full((1,), 1.2), 4.0)
    assert torch.allclose(same, pixel_grid(4, 1, torch.device("cpu")).flatten(1, 2), atol=1e-6)
    # the reference's head 0.1 head units to the right: every point is seen 2 f dx / z further
    shifted = reference_flow(origins, directions, depth, torch.eye(3)[None],
                             torch.tensor([[0.1, 0.0, 0.0]]), torch.full((1,), 1.2), 4.0)
    assert torch.allclose(shifted[..., 0] - same[..., 0], torch.full((1, 16), 0.06), atol=1e-6)
    assert torch.allclose(shifted[..., 1], same[..., 1], atol=1e-6)


def test_warp_brings_a_shifted_reference_onto_the_target_and_leaves_the_background() -> None:
    target = torch.rand(1, 3, 16, 16)
    reference = torch.roll(target, shifts=2, dims=-1)  # the head seen 2 pixels to the right
    here = pixel_grid(4, 1, torch.device("cpu")).flatten(1, 2)
    seen_at = here + torch.tensor([2 * 2 / 16, 0.0])  # 2 pixels in grid units
    warped = warp_to_target(reference, seen_at, torch.ones(1, 16), 4)
    assert torch.allclose(warped[..., 2:-2], target[..., 2:-2], atol=1e-5)
    unmoved = warp_to_target(reference, seen_at, torch.zeros(1, 16), 4)
    assert torch.allclose(unmoved, reference, atol=1e-6)


def test_warped_model_keeps_a_same_pose_reference_and_trains_its_depth_through_the_warp() -> None:
    warping = ModelConfig(**{**CONFIG.__dict__, "warp_reference": True})
    model = TalkingHead(warping)
    inputs = _inputs(2, warping)
    same_pose = {"reference_rotation": inputs["rotation"], "reference_offset": inputs["offset"],
                 "reference_focal": inputs["focal"]}
    out = model(**inputs, **same_pose)
    assert torch.allclose(out["reference"], inputs["reference"], atol=1e-5)
    moved = {**same_pose, "reference_offset": torch.tensor([[0.05, 0.0, 0.0]]).expand(2, 3)}
    with torch.no_grad():  # some density, so the head has a surface to move
        model.field.planes.add_(1.0)
    out = model(**inputs, **moved)
    assert not torch.allclose(out["reference"], inputs["reference"], atol=1e-3)
    out["reference"].mean().backward()
    assert model.field.planes.grad is not None and model.field.planes.grad.abs().sum() > 0
