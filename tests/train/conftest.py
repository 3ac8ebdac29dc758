from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench.split_view import make_view
from facespeech.train.synthetic import make_synthetic_dataset


@pytest.fixture(scope="session")
def synthetic_dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two seconds of a drawn talking face at 32x32 in the dataset layout."""
    return make_synthetic_dataset(tmp_path_factory.mktemp("synthetic"), seconds=2.0, size=32)


def joined_view(dataset: Path, view: Path, segment_starts: list[int]) -> Path:
    """A view of `dataset` that says its frames come from videos joined at segment_starts."""
    make_view(dataset, view, 1.0)
    info_file = view / "metadata" / "info.json"
    info = json.loads(info_file.read_text())
    info_file.unlink()  # a link to the original: write the joined dataset's own
    info_file.write_text(json.dumps({**info, "segments": {info["persons"][0]: segment_starts}}))
    return view
