"""A dataset joined from several videos: references and retrieved frames stay in their video."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import torch

from facespeech.dataset import load_features, read_tracks
from facespeech.quality.evaluate import retrieval_rows
from facespeech.train.data import (
    ClipTensors,
    PoseNormaliser,
    audio_statistics,
    load_clip,
    nearest_pose_rows,
)


def _clip(root: Path, segment_starts: list[int]) -> ClipTensors:
    track = replace(read_tracks(root)[0], segment_starts=segment_starts)
    mel = load_features(root, track.person, track.clip)
    return load_clip(root, track, 32, 32, PoseNormaliser.fit(track.poses),
                     audio_statistics(mel), mel, 4.0, 1)


def test_rows_know_their_source_video(synthetic_dataset: Path) -> None:
    clip = _clip(synthetic_dataset, [1, 21])
    frames = torch.tensor([p.frame for p in clip.track.poses])
    assert torch.equal(clip.segment, (frames >= 21).long())
    assert int(_clip(synthetic_dataset, [1]).segment.max()) == 0


def test_references_and_retrieval_never_cross_videos(synthetic_dataset: Path) -> None:
    whole = _clip(synthetic_dataset, [1])
    joined = _clip(synthetic_dataset, [1, 21])
    rows = list(range(len(joined.track.poses)))
    # the synthetic head turns back and forth, so the nearest poses of one clip lie in both
    crossing = whole.segment[nearest_pose_rows(whole, rows, 4, 3)] != joined.segment[rows][:, None]
    assert crossing.any()
    references = nearest_pose_rows(joined, rows, 4, 3)
    assert torch.equal(joined.segment[references],
                       joined.segment[rows][:, None].expand_as(references))
    retrieved = retrieval_rows(joined, joined.held_out_rows)
    assert (joined.segment[retrieved] == joined.segment[joined.held_out_rows]).all()
