"""DDP equivalence: two gloo ranks of batch B train the same model as one process of 2B."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp

from facespeech.train import TrainConfig, run
from facespeech.train.checkpoints import load
from tests.conftest import free_port
from tests.train.test_loop import SMALL


def _config(batch_size: int) -> TrainConfig:
    # no ray jitter: each rank draws its own jitter, which one process cannot replay
    return TrainConfig.from_preset("tiny", {**SMALL, "batch_size": batch_size, "steps": 3,
                                            "ray_jitter": False, "tensorboard": False})


def _rank(rank: int, world_size: int, port: int, dataset: Path, run_dir: Path) -> None:
    os.environ.update({"RANK": str(rank), "WORLD_SIZE": str(world_size), "LOCAL_RANK": str(rank),
                       "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port)})
    torch.set_num_threads(1)
    run(dataset, run_dir, _config(batch_size=2))


@pytest.mark.timeout(300)
def test_two_gloo_ranks_match_one_process(synthetic_dataset: Path, tmp_path: Path) -> None:
    mp.spawn(_rank, args=(2, free_port(), synthetic_dataset, tmp_path / "ddp"), nprocs=2)
    single = run(synthetic_dataset, tmp_path / "single", _config(batch_size=4))

    ddp, one = load(tmp_path / "ddp/model.pt"), load(single.checkpoint)
    assert ddp["step"] == one["step"] == 3
    for name, value in one["model"].items():
        torch.testing.assert_close(ddp["model"][name], value, rtol=1e-4, atol=1e-5, msg=name)
