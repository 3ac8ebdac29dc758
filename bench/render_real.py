"""The real-output check: train `fast` briefly on a preprocessed clip, render 60 s of speech.

    python -m bench.render_real DATASET SPEECH.wav OUT --minutes 4 --silences 9.5-10.5,...

Trains within the time budget (the newest checkpoint when the budget ends), embeds the
reference frames into the model file, then times a cold render (a fresh process: imports,
CUDA start, model load, render) and warm renders (model already on the GPU) of SPEECH, and
writes PNG contact sheets of the output plus the mouth-in-silence and loop-point figures.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Annotated, Any

import av
import numpy as np
import typer
from PIL import Image

from facespeech import render
from facespeech.hooks import Stopped
from facespeech.train import TrainConfig, checkpoints
from facespeech.train import run as train

app = typer.Typer(add_completion=False)

COLD = """
import sys, time
from pathlib import Path
from facespeech import render
r = render.load(Path(sys.argv[1]))
res = r.render(Path(sys.argv[2]), Path(sys.argv[3]), render.RenderConfig())
print("COLD_RENDER_S", res.seconds_taken)
"""


def _train(dataset: Path, run_dir: Path, minutes: float, overrides: dict[str, Any]) -> Path:
    config = TrainConfig.from_preset("fast", {"eval_every": 0, "checkpoint_every": 500,
                                              **overrides})
    deadline = time.monotonic() + minutes * 60
    try:
        return train(dataset, run_dir, config, should_stop=lambda: time.monotonic() > deadline
                     ).checkpoint
    except Stopped:
        newest = checkpoints.newest(run_dir)
        assert newest is not None
        return newest


def _frames(video: Path) -> np.ndarray:
    with av.open(str(video)) as container:
        return np.stack([f.to_ndarray(format="rgb24") for f in container.decode(video=0)])


@app.command()
def main(
    dataset: Path, speech: Path, out: Path, minutes: float = 4.0,
    silences: Annotated[str, typer.Option(help="start-end seconds of pauses in SPEECH")] = "",
    steps: int = 20_000,
) -> None:
    out.mkdir(parents=True, exist_ok=True)
    work = Path("/tmp/render_real")
    started = time.perf_counter()
    model = _train(dataset, work / "run", minutes, {"steps": steps})
    report: dict[str, Any] = {"train_s": time.perf_counter() - started, "checkpoint": model.name}
    packed = work / "model.pt"
    state = checkpoints.load(model)
    report["step"] = state.get("step")
    checkpoints.save_atomic({k: v for k, v in state.items() if k != "optimizer"}, packed)
    render.embed(packed, dataset)
    report["model_mb"] = packed.stat().st_size / 1e6

    started = time.perf_counter()
    cold = subprocess.run([sys.executable, "-c", COLD, str(packed), str(speech),
                           str(work / "cold.mp4")], capture_output=True, text=True)
    report["cold_total_s"] = time.perf_counter() - started
    report["cold_stdout"] = cold.stdout[-300:] + cold.stderr[-1500:]

    renderer = render.load(packed)
    warm = []
    video = out / "render_60s.mp4"
    for _ in range(3):
        result = renderer.render(speech, video, render.RenderConfig())
        warm.append({"seconds": result.seconds_taken, "timings": result.timings})
    report["warm"] = warm
    report["frames"] = result.frames
    _look(video, renderer, silences, report, out)
    for name, config in {"still_green": render.RenderConfig(motion="still", background="green",
                                                             blink_rate=20, size=256)}.items():
        renderer.render(speech, work / f"{name}.mp4", config)
        frames = _frames(work / f"{name}.mp4")
        Image.fromarray(np.concatenate(list(frames[::150][:8]), axis=1)).save(
            out / f"{name}.png")
    (out / "render_real.json").write_text(json.dumps(report, indent=2, default=str))
    print(json.dumps({k: v for k, v in report.items() if k != "cold_stdout"}, default=str))
    print(report["cold_stdout"])


def _look(video: Path, renderer: render.Renderer, silences: str, report: dict[str, Any],
          out: Path) -> None:
    """Contact sheets, mouth opening in pauses vs speech, frame jumps at ping-pong turns."""
    frames = _frames(video)
    n = len(frames)
    picks = np.linspace(0, n - 1, 12).astype(int)
    sheet = np.concatenate([np.concatenate(list(frames[picks[i:i + 4]]), axis=1)
                            for i in range(0, 12, 4)], axis=0)
    Image.fromarray(sheet).resize((sheet.shape[1] // 2, sheet.shape[0] // 2)).save(
        out / "sheet.png")
    box = renderer.reference.mouth.mean(0).cpu().numpy()  # mean mouth box, [0, 1]
    size = frames.shape[1]
    x0, y0, x1, y1 = (box * size).astype(int)
    mouth = frames[:, y0:y1, x0:x1].astype(np.float32).mean(-1)  # (n, h, w) luma-ish
    face_level = np.median(frames[:, size // 3: 2 * size // 3, size // 3: 2 * size // 3])
    dark = (mouth < 0.45 * face_level).mean(axis=(1, 2))  # open mouth: dark cavity, teeth
    zoom = np.concatenate(list(frames[picks][:, y0:y1, x0:x1]), axis=1)
    Image.fromarray(zoom).save(out / "mouths.png")
    silent = np.zeros(n, bool)
    for span in filter(None, silences.split(",")):
        start, end = (float(x) for x in span.split("-"))
        # skip the first and last 0.2 s: the audio windows reach 0.16 s either side
        silent[int((start + 0.2) * 25): int((end - 0.2) * 25)] = True
    report["mouth_dark_fraction"] = {"silence": float(dark[silent].mean()) if silent.any()
                                     else None, "speech": float(dark[~silent].mean())}
    if silent.any():
        first = np.flatnonzero(silent)[:6]
        Image.fromarray(np.concatenate(list(frames[first][:, y0:y1, x0:x1]), axis=1)).save(
            out / "mouths_silence.png")
    steps = np.abs(np.diff(frames.astype(np.int16), axis=0)).mean(axis=(1, 2, 3))
    turn = len(renderer.reference) - 1
    at_turns = [steps[i - 1: i + 1].max() for i in range(turn, n - 1, turn)]
    report["frame_step"] = {"turns_max": float(max(at_turns)) if at_turns else None,
                            "elsewhere_p99": float(np.percentile(steps, 99)),
                            "elsewhere_median": float(np.median(steps))}


if __name__ == "__main__":
    app()
