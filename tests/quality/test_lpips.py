"""LPIPS from local files: the loading code on weight files the test writes in the layouts of
torchvision's AlexNet and the `lpips` package (the real ones cannot be downloaded here)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

from facespeech.quality.lpips import CHANNELS, LPIPS


def _torchvision_alexnet_state() -> dict[str, torch.Tensor]:
    """A random AlexNet state dict with torchvision's keys, classifier included."""
    torch.manual_seed(0)
    convs = {0: (64, 3, 11), 3: (192, 64, 5), 6: (384, 192, 3), 8: (256, 384, 3), 10: (256, 256, 3)}
    state = {}
    for index, (out, inp, k) in convs.items():
        conv = nn.Conv2d(inp, out, k)
        state[f"features.{index}.weight"], state[f"features.{index}.bias"] = conv.weight, conv.bias
    state["classifier.1.weight"] = torch.zeros(4096, 9216)  # ignored: only features are used
    return {key: value.detach().clone() for key, value in state.items()}


@pytest.fixture(scope="module")
def weight_files(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    folder = tmp_path_factory.mktemp("lpips")
    backbone, linear = folder / "alexnet-owt-7be5be79.pth", folder / "alex.pth"
    torch.save(_torchvision_alexnet_state(), backbone)
    torch.save({f"lin{i}.model.1.weight": torch.rand(1, c, 1, 1) for i, c in enumerate(CHANNELS)},
               linear)
    return backbone, linear


def test_loaded_weights_are_the_files(weight_files: tuple[Path, Path]) -> None:
    model = LPIPS.load(*weight_files)
    state = torch.load(weight_files[0], weights_only=True)
    assert torch.equal(model.features[8].weight, state["features.8.weight"])
    heads = torch.load(weight_files[1], weights_only=True)
    assert torch.equal(model.linear[4].weight, heads["lin4.model.1.weight"])
    assert not any(p.requires_grad for p in model.parameters())


def test_distance_is_zero_for_equal_images_and_grows_with_the_difference(
    weight_files: tuple[Path, Path]
) -> None:
    model = LPIPS.load(*weight_files)
    torch.manual_seed(1)
    image = torch.rand(2, 3, 128, 128)
    noise = torch.randn_like(image)
    same = model(image, image)
    assert same.shape == (2,) and torch.allclose(same, torch.zeros(2), atol=1e-6)
    distances = [float(model(image, (image + level * noise).clamp(0, 1)).mean())
                 for level in (0.02, 0.1, 0.4)]
    assert 0 < distances[0] < distances[1] < distances[2]
    assert torch.allclose(model(image, image.flip(0)), model(image.flip(0), image), atol=1e-5)


def test_files_of_another_network_are_refused_by_name(
    weight_files: tuple[Path, Path], tmp_path: Path
) -> None:
    wrong = tmp_path / "vgg.pth"
    torch.save({"features.0.weight": torch.zeros(64, 3, 3, 3)}, wrong)
    with pytest.raises(ValueError, match="vgg.pth does not hold LPIPS/AlexNet weights"):
        LPIPS.load(wrong, weight_files[1])
