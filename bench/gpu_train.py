"""Train a preset on a preprocessed dataset within a wall-clock budget; write metrics + a grid.

    python -m bench.gpu_train DATASET OUT --preset fast --minutes 6

A 100-step probe measures seconds per step, then the main run takes as many steps as fit
in the budget (capped by the preset). A run longer than one device call:

    python -m bench.gpu_train DATASET OUT --steps 11000 --stop-after 8 --work W   # call 1
    python -m bench.gpu_train DATASET OUT --steps 11000 --resume --work W         # call 2

`--steps` skips the probe; `--stop-after` minutes stops with a checkpoint in W (exit 3);
`--resume` continues from W's newest checkpoint. The held-out evaluation is quality.evaluate's
(paste-back, head and full-render PSNR/SSIM beside the static and retrieval baselines) without
the landmark metrics; `facespeech eval` on the fp16 weights written here adds them.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import torch
import typer

from facespeech import train
from facespeech.hooks import Stopped
from facespeech.quality.evaluate import evaluate
from facespeech.train import checkpoints


def _seconds_per_step(dataset: Path, out: Path, config: train.TrainConfig) -> float:
    probe = config.model_copy(update={"steps": 100, "eval_every": 0, "eval_frames": 1})
    started = time.perf_counter()
    train.run(dataset, out / "probe", probe, resume=False)
    log = (out / "probe" / "metrics.jsonl").read_text().splitlines()
    lines = [json.loads(line) for line in log]
    timings = [x["value"] for x in lines if x["name"] == "Timing/sec_per_iter"]
    return timings[-1] if timings else (time.perf_counter() - started) / 100


def main(
    dataset: Path,
    out: Path,
    preset: str = "fast",
    minutes: float = 6.0,
    work: Path = Path("/tmp/facespeech-bench"),
    overrides: str = "{}",
    name: str = "",
    held_out_eval: bool = typer.Option(True, help="quality.evaluate here (needs PyAV)"),
    steps: int = typer.Option(0, help="train this many steps, no probe (0: fit `minutes`)"),
    stop_after: float = typer.Option(0.0, help="minutes; then checkpoint and exit 3 (0: never)"),
    resume: bool = typer.Option(False, help="continue from the newest checkpoint in work"),
) -> None:
    """Run dirs (checkpoints) go to `work`; the summary, the grid and the weights in fp16
    (small enough to bring back and evaluate with `facespeech eval` elsewhere) go to `out`."""
    out.mkdir(parents=True, exist_ok=True)
    name = name or preset
    work = work / name
    config = train.TrainConfig.from_preset(preset, json.loads(overrides))
    sec_per_step = 0.0
    if not steps:
        sec_per_step = _seconds_per_step(dataset, work, config)
        steps = min(config.steps, max(200, int(minutes * 60 / sec_per_step)))
    config = config.model_copy(update={"steps": steps})
    started = time.perf_counter()
    deadline = started + stop_after * 60 if stop_after else float("inf")
    try:
        result = train.run(dataset, work / "run", config, resume=resume,
                           should_stop=lambda: time.perf_counter() > deadline)
    except Stopped as stopped:
        print(stopped)
        raise typer.Exit(3) from stopped
    wall = time.perf_counter() - started
    summary = {
        "preset": preset,
        "steps": steps,
        "sec_per_step_probe": sec_per_step,
        "train_wall_s": wall,
        "metrics": result.metrics,
        "device": torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu",
        "peak_gpu_mem_gb": torch.cuda.max_memory_allocated() / 1e9
        if torch.cuda.is_available()
        else 0.0,
        "torch": torch.__version__,
        "argv": sys.argv,
    }
    (out / f"summary_{name}.json").write_text(json.dumps(summary, indent=2))
    print(json.dumps(summary, indent=2))
    state = checkpoints.load(result.checkpoint)  # brought back before anything else can fail
    state["model"] = {key: value.half() for key, value in state["model"].items()}
    checkpoints.save_atomic(state, out / f"model_{name}.pt")
    if not held_out_eval:
        return
    # the harness's PSNR/SSIM protocols and grid; landmarks need MediaPipe, run them where it is
    summary["eval"] = evaluate(result.checkpoint, dataset, landmarks=False,
                               grid=out / f"heldout_{name}.png")
    (out / f"summary_{name}.json").write_text(json.dumps(summary, indent=2))
    print(json.dumps(summary["eval"], indent=2))


if __name__ == "__main__":
    typer.run(main)
