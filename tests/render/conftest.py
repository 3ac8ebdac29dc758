from __future__ import annotations

from pathlib import Path

import pytest

from facespeech.train.synthetic import make_synthetic_dataset


@pytest.fixture(scope="session")
def synthetic_dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two seconds of a drawn talking face at 32x32 in the dataset layout."""
    return make_synthetic_dataset(tmp_path_factory.mktemp("synthetic"), seconds=2.0, size=32)
