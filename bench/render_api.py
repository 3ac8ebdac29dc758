"""Speech in, finished video out, timed from the API (issue 4: 60 s of speech -> mp4 in the
object store).

Starts the embedded stack the way a user does (`facespeech serve` with its worker: SQLite,
local store, a real Celery worker), uploads a talking video, trains through the API, then
renders the same speech several times. The first render loads the model in the worker (cold);
the others find it warm. Each render is timed from the POST to the moment the client sees the
job `succeeded` (the video stored, its link signed), and the job's own timestamps split that
into waiting in the queue, the task itself, and what is left (upload and polling).

    python -m bench.render_api VIDEO --seconds 60 --preset fast --renders 3 --out OUT

VIDEO may also be a dataset archive in the layout of DESIGN.md (what the API accepts too):
on a machine without MediaPipe (the GPU device) the bench uploads one made elsewhere. `--audio`
renders a given file instead of the shared voices.
"""

from __future__ import annotations

import json
import os
import signal
import tempfile
import time
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any

import numpy as np
import soundfile
import typer

from bench.load_common import free_port
from facespeech.client import Client
from facespeech.localstack import new_api_key, start_serve, wait_ready
from facespeech.media import load_audio

app = typer.Typer(add_completion=False)
VOICES = Path(__file__).resolve().parents[2] / "shared" / "data" / "audio"
SAMPLE_RATE = 16_000


def speech(seconds: float, path: Path) -> Path:
    """`seconds` of the shared voices one after another (several languages), 16 kHz mono."""
    voices = sorted(VOICES.glob("*.wav"))
    if not voices:
        raise typer.BadParameter(f"no voices in {VOICES} (the shared data folder)")
    parts, total = [], 0
    while total < seconds * SAMPLE_RATE:
        for voice in voices:
            parts.append(load_audio(voice, SAMPLE_RATE))
            total += len(parts[-1])
    soundfile.write(path, np.concatenate(parts)[: int(seconds * SAMPLE_RATE)], SAMPLE_RATE)
    return path


def _seconds_between(start: str, end: str) -> float:
    return (datetime.fromisoformat(end) - datetime.fromisoformat(start)).total_seconds()


def _timed_render(client: Client, model_id: str, audio: Path) -> dict[str, Any]:
    posted = time.perf_counter()
    job = client.start_render(model_id, audio)
    accepted = time.perf_counter()
    job = client.wait(job["id"], interval=0.05, timeout=1800)
    seen = time.perf_counter()
    if job["status"] != "succeeded":
        raise RuntimeError(f"render {job['id']} {job['status']}: {job['error']}")
    queued = _seconds_between(job["created_at"], job["started_at"])
    task = _seconds_between(job["started_at"], job["finished_at"])
    return {
        "api_total_s": round(seen - posted, 2),
        "post_s": round(accepted - posted, 2),  # upload + probe + enqueue, until 202
        "queue_s": round(queued, 2),
        "task_s": round(task, 2),  # fetch audio, features, render + encode, store the video
        "metrics": job["metrics"],
        "result_url": job["result_url"],
    }


@app.command()
def main(
    video: Path,
    seconds: Annotated[float, typer.Option(help="length of the speech rendered")] = 60.0,
    preset: str = "fast",
    overrides: Annotated[str, typer.Option(help="training overrides as JSON")] = "{}",
    renders: int = 3,
    out: Annotated[Path | None, typer.Option(help="keep the data dir and the last video")] = None,
    audio: Annotated[Path | None, typer.Option(help="speech to render (default: the shared "
                                                    "voices, `seconds` long)")] = None,
) -> None:
    data_dir = Path(tempfile.mkdtemp(prefix="facespeech-render-api-")) if out is None else out
    data_dir.mkdir(parents=True, exist_ok=True)
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("FACESPEECH_")}
    env |= {"FACESPEECH_DATA_DIR": str(data_dir / "data"),
            "FACESPEECH_PUBLIC_URL": f"http://127.0.0.1:{port}",
            "FACESPEECH_TENANT_RATE_PER_S": "0"}
    key = new_api_key(env, "bench-render")
    log = data_dir / "serve.log"
    server = start_serve(env, port, log)
    try:
        base_url = f"http://127.0.0.1:{port}"
        wait_ready(base_url, server, log)
        client = Client(base_url, key)
        started = time.perf_counter()
        dataset = client.upload_dataset(video)
        run = client.start_training(dataset["id"], preset, json.loads(overrides))
        trained = client.wait(run["id"], timeout=3600)
        if trained["status"] != "succeeded":
            raise RuntimeError(f"training {trained['status']}: {trained['error']}")
        print(json.dumps({"bench": "render_api_train", "preset": preset,
                          "wall_s": round(time.perf_counter() - started, 1),
                          "metrics": trained["metrics"]}), flush=True)
        audio = audio or speech(seconds, data_dir / f"speech_{seconds:g}s.wav")
        for index in range(renders):
            result = _timed_render(client, trained["model_id"], audio)
            if out is not None and index == renders - 1:
                client.download(result["result_url"], out / "render.mp4")
            del result["result_url"]
            print(json.dumps({"bench": "render_api", "run": index + 1,
                              "model": "cold" if index == 0 else "warm",
                              "speech_s": seconds, **result}), flush=True)
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=60)


if __name__ == "__main__":
    app()
