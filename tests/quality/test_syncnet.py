"""SyncNet scoring: the loader on a weights file the test writes (the real syncnet_v2.model
cannot be downloaded here), the face crop, and the offset/LSE arithmetic on a clip whose
mouth follows its sound with a known delay."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from facespeech.quality import syncnet
from facespeech.quality.syncnet import SyncNet, crop_faces, face_crop_boxes, sync_score

FPS, RATE = syncnet.FPS, syncnet.SAMPLE_RATE
SAMPLES_PER_FRAME = RATE // FPS


@pytest.fixture(scope="module")
def weights(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A SyncNet state dict as older PyTorch saved syncnet_v2.model: no BN step counters."""
    torch.manual_seed(0)
    state = {k: v for k, v in SyncNet().state_dict().items()
             if not k.endswith("num_batches_tracked")}
    path = tmp_path_factory.mktemp("syncnet") / "syncnet_v2.model"
    torch.save(state, path)
    return path


def test_weights_load_by_syncnet_pythons_names(weights: Path) -> None:
    model = SyncNet.load(weights)
    saved = torch.load(weights, weights_only=True)
    assert torch.equal(model.netcnnlip[18].weight, saved["netcnnlip.18.weight"])
    assert torch.equal(model.netfcaud[3].bias, saved["netfcaud.3.bias"])
    assert model.embed_audio(torch.zeros(2, 1, 13, 20)).shape == (2, 1024)
    assert model.embed_lips(torch.zeros(2, 3, 5, 224, 224)).shape == (2, 1024)


def test_other_weights_are_refused_by_name(tmp_path: Path) -> None:
    wrong = tmp_path / "wav2lip_syncnet.pth"
    torch.save({"face_encoder.0.weight": torch.zeros(1)}, wrong)
    with pytest.raises(ValueError, match="wav2lip_syncnet.pth does not hold SyncNet"):
        SyncNet.load(wrong)


def test_crop_box_is_syncnet_pythons_and_untracked_frames_borrow_a_neighbour() -> None:
    face = np.array([[40.0, 50.0], [80.0, 70.0], [60.0, 90.0]])  # extent 40 x 40 around (60, 70)
    boxes = face_crop_boxes([face, None, face + 1], smooth=13)
    b = 20.0
    np.testing.assert_allclose(boxes[0], [60 - 1.4 * b, 70 - b, 60 + 1.4 * b, 70 + 1.8 * b])
    np.testing.assert_allclose(boxes[1], boxes[0])
    with pytest.raises(ValueError, match="no face"):
        face_crop_boxes([None, None])


def test_crop_is_bgr_224_and_pads_grey_outside_the_frame() -> None:
    frame = torch.zeros(1, 3, 64, 64, dtype=torch.uint8)
    frame[:, 0] = 200  # red
    crops = crop_faces(frame, np.array([[-64.0, 0.0, 64.0, 64.0]]))  # left half off the frame
    assert crops.shape == (1, 3, syncnet.CROP, syncnet.CROP)
    inside, outside = crops[0, :, 112, 180], crops[0, :, 112, 40]
    torch.testing.assert_close(inside, torch.tensor([0.0, 0.0, 200.0]))  # B, G, R
    torch.testing.assert_close(outside, torch.full((3,), 110.0))


class EnvelopeNet(SyncNet):
    """Embeds the centre frame's brightness and the centre 40 ms of sound as on/off: the
    arithmetic around the network (windows, shifts, sign) is what is checked."""

    def embed_lips(self, frames: torch.Tensor) -> torch.Tensor:
        bright = frames[:, :, 2].mean(dim=(1, 2, 3)) > 128
        return torch.nn.functional.pad(bright.float()[:, None], (0, 1023))

    def embed_audio(self, mfcc: torch.Tensor) -> torch.Tensor:
        loud = mfcc[:, 0, 0, 8:12].mean(dim=1) > 0  # coefficient 0 is the log energy
        return torch.nn.functional.pad(loud.float()[:, None], (0, 1023))


@pytest.mark.parametrize("delay", [0, 3, -2])
def test_offset_and_confidence_follow_a_known_delay(delay: int) -> None:
    frames = 150
    rng = np.random.default_rng(1)
    loud = rng.random(frames) > 0.5
    audio = np.concatenate([
        (0.3 if on else 1e-4) * rng.standard_normal(SAMPLES_PER_FRAME) for on in loud])
    # frame t shows an open (bright) mouth when the sound of frame t - delay was loud
    bright = np.roll(loud, delay)
    faces = torch.zeros(frames, 3, syncnet.CROP, syncnet.CROP)
    faces[torch.from_numpy(bright)] = 255.0
    score = sync_score(EnvelopeNet().eval(), faces, audio.astype(np.float32))
    assert score.offset_frames == delay
    assert score.frames == frames - syncnet.WINDOW
    assert score.distance < 0.1 < score.confidence


def test_too_short_a_clip_is_refused_with_the_minimum(weights: Path) -> None:
    faces = torch.zeros(20, 3, syncnet.CROP, syncnet.CROP)
    with pytest.raises(ValueError, match="at least 36"):
        sync_score(SyncNet.load(weights), faces, np.zeros(20 * SAMPLES_PER_FRAME, np.float32))
