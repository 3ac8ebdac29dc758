"""The streamed building blocks give what their whole-clip versions give."""

from __future__ import annotations

import numpy as np
import pytest

from facespeech.preprocess.crop import smooth_boxes
from facespeech.preprocess.pose import fit_poses
from facespeech.preprocess.smoothing import landmark_jitter, one_euro, smooth_landmarks
from facespeech.preprocess.stream import _BoxSmoother
from facespeech.preprocess.tracking import GapFiller, fill_short_gaps


def _landmarks(present: list[bool]) -> list[np.ndarray | None]:
    return [np.full((4, 3), float(i)) if p else None for i, p in enumerate(present)]


@pytest.mark.parametrize("pattern", [
    "xx..xxx......xx.x", "..xxxx", "xxxx..", "x.x.x", "xx.......", "x",
])
def test_gap_filler_matches_fill_short_gaps(pattern: str) -> None:
    landmarks = _landmarks([c == "x" for c in pattern])
    expected, dropped = fill_short_gaps(landmarks, max_gap=3)
    filler = GapFiller(max_gap=3)
    out = [item for lm in landmarks for item in filler.push(lm)] + filler.finish()
    assert [i for i, _, _ in out] == list(range(len(pattern)))  # in order, each once
    assert [i for i, lm, _ in out if lm is None] == dropped
    for i, lm, interpolated in out:
        if lm is not None:
            assert np.allclose(lm, expected[i])
            assert interpolated == (pattern[i] == ".")


@pytest.mark.parametrize("take_start", [300, 40, 41, 150])
def test_box_smoother_streams_the_whole_clip_result(take_start: int) -> None:
    """Streamed, resumed after 40 boxes, it gives each take's whole path smoothed on its own:
    the second take's first boxes owe nothing to the first take's framing."""
    rng = np.random.default_rng(0)
    boxes = np.cumsum(rng.normal(size=(300, 3)), axis=0) + 200
    boxes[take_start:] *= 1.5  # another video, another framing
    takes = [int(i >= take_start) for i in range(300)]
    expected = np.concatenate([smooth_boxes(boxes[:take_start], 2.0, 6.0),
                               smooth_boxes(boxes[take_start:], 2.0, 6.0)])
    smoother = _BoxSmoother(2.0, 6.0, boxes[:40], takes[:40])
    out = []
    for box, take in zip(boxes[40:], takes[40:], strict=True):
        smoother.push(box, take)
        out.append(smoother.ready(final=False))
    out.append(smoother.ready(final=True))
    assert np.allclose(np.concatenate(out), expected[40:])


def test_poses_are_smoothed_within_each_take() -> None:
    """A second video's first frames keep their own pose, not one blended with the first's."""
    rng = np.random.default_rng(2)
    face = rng.uniform(100, 300, size=(478, 3))
    tilted = face @ np.array([[1, 0, 0], [0, 0.9, -0.436], [0, 0.436, 0.9]]).T
    landmarks = np.stack([face] * 20 + [tilted] * 20)
    joined = fit_poses(landmarks, 512, breaks=[20])
    blended = fit_poses(landmarks, 512)
    assert np.allclose(joined.rotations[20], joined.rotations[39], atol=1e-6)
    assert not np.allclose(blended.rotations[20], blended.rotations[39], atol=1e-3)


def test_one_euro_forward_backward_has_no_lag() -> None:
    t = np.arange(200) / 25
    ramp = np.where(t < 2, 0.0, np.minimum(t - 2, 2.0) * 50)[:, None]  # 50 px/s, then stops
    causal = one_euro(ramp, 25, 1.0, 0.0)
    both = smooth_landmarks(np.repeat(ramp[:, None], 478, axis=1).repeat(3, axis=2), 25,
                            1.0, 0.0)[:, 0, 0]
    middle = slice(60, 90)  # moving steadily
    assert np.mean(ramp[middle, 0] - causal[middle, 0]) > 2.0  # the causal filter lags
    assert abs(np.mean(ramp[middle, 0] - both[middle])) < 0.5  # forward-backward does not


def test_smoothing_reduces_jitter_of_a_still_face() -> None:
    rng = np.random.default_rng(1)
    face = rng.uniform(0, 200, size=(478, 3))
    face[10], face[152] = (100, 0, 0), (100, 200, 0)  # forehead, chin: face height 200
    noisy = face[None] + rng.normal(scale=1.0, size=(100, 478, 3))
    smoothed = smooth_landmarks(noisy, 25, 1.5, 0.5)
    assert landmark_jitter(smoothed) < 0.5 * landmark_jitter(noisy)
