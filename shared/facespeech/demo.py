"""`facespeech demo`: the whole flow over HTTP on the embedded stack, on one machine."""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path
from typing import Any

from rich.console import Console

from facespeech.client import Client
from facespeech.config import get_settings
from facespeech.localstack import start_serve, wait_ready
from facespeech.progress_bar import progress_bar


def _api_key() -> str:
    from facespeech.api.security import create_tenant_with_key
    from facespeech.db.migrate import upgrade_head
    from facespeech.db.session import session_scope

    upgrade_head(get_settings().database_url)
    with session_scope() as session:
        return create_tenant_with_key(session, "demo")[1]


def _start_server(port: int, log: Path) -> subprocess.Popen[bytes]:
    """`facespeech serve` (API + worker) in the background, its chatter kept in a log file."""
    env = {
        **os.environ,
        "FACESPEECH_PUBLIC_URL": f"http://127.0.0.1:{port}",
        "GLOG_minloglevel": "2",  # mediapipe's C++ logging is loud and says nothing useful here
    }
    server = start_serve(env, port, log)
    try:
        wait_ready(f"http://127.0.0.1:{port}", server, log)
    except RuntimeError:
        server.terminate()
        raise
    return server


def _follow(client: Client, job: dict[str, Any], title: str) -> dict[str, Any]:
    with progress_bar(title) as (_, bar):

        def update(current: dict[str, Any]) -> None:
            metrics = {k: v for k, v in current["metrics"].items() if isinstance(v, float)}
            info = " ".join(f"{k}={v:.3g}" for k, v in list(metrics.items())[:2])
            bar.update(current["stage"], current["progress"], info)

        return client.wait(job["id"], update)


def _sample_inputs(work: Path, video: Path | None, audio: Path | None) -> tuple[Path, Path]:
    from facespeech.sample import make_sample, make_speech

    if video is None:
        video, _ = make_sample(work / "sample")
    if audio is None:
        audio = make_speech(work / "sample" / "new_speech.wav", seconds=6.0, seed=7)
    return video, audio


def _ensure_succeeded(job: dict[str, Any], what: str) -> None:
    if job["status"] != "succeeded":
        raise SystemExit(f"{what} {job['status']}: {job.get('error')}")


def run_demo(
    video: Path | None, audio: Path | None, preset: str, port: int, console: Console
) -> Path:
    settings = get_settings()
    work = settings.data_dir.resolve() / "demo"
    work.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    console.rule("facespeech demo")
    video, audio = _sample_inputs(work, video, audio)
    console.print(f"video: {video}\naudio: {audio}")
    log = work / "server.log"
    console.print(f"server and worker log: {log}")
    server = _start_server(port, log)
    try:
        client = Client(f"http://127.0.0.1:{port}", _api_key())
        dataset = client.upload_dataset(video)
        console.print(f"uploaded dataset {dataset['id']} ({dataset['size_bytes']} bytes)")
        training = _follow(client, client.start_training(dataset["id"], preset), "train")
        _ensure_succeeded(training, "training")
        model = client.model(training["model_id"])
        console.print(f"model {model['id']}: {model['metrics']}")
        rendering = _follow(client, client.start_render(model["id"], audio), "render")
        _ensure_succeeded(rendering, "render")
        out = client.download(rendering["result_url"], work / f"render-{rendering['id']}.mp4")
    finally:
        server.terminate()
        server.wait(timeout=60)
    console.rule("done")
    console.print(f"held-out metrics: {model['metrics']}")
    console.print(f"total time: {time.monotonic() - started:.0f} s")
    console.print(f"[bold green]video: {out}")
    return out
