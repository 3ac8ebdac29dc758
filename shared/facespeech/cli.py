"""The `facespeech` command: servers, workers, the demo, and the library on local files."""

from __future__ import annotations

import ctypes
import json
import os
import signal
import subprocess
import sys
from dataclasses import asdict
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from facespeech.config import get_settings

app = typer.Typer(no_args_is_help=True, add_completion=False, help=__doc__)
console = Console()


@app.command()
def serve(
    host: str = "127.0.0.1",
    port: int = 8000,
    worker: Annotated[bool, typer.Option(help="also start a worker for all queues")] = True,
    api_workers: Annotated[int, typer.Option(help="API processes (uvicorn workers)")] = 1,
) -> None:
    """Run the API (and, in the embedded default, a worker process beside it)."""
    import uvicorn

    from facespeech.db.migrate import upgrade_head
    from facespeech.jobs.reconcile import start_reconciler_thread

    upgrade_head(get_settings().database_url)
    start_reconciler_thread()
    child = _start_worker_process(("preprocess", "train", "render")) if worker else None
    console.print(f"facespeech on http://{host}:{port}/ (web page), API reference at /docs"
                  + (", with a worker for all queues" if worker else ""))
    try:
        uvicorn.run(
            "facespeech.api.app:create_app",
            factory=True,
            host=host,
            port=port,
            workers=api_workers,
            log_level="warning",
        )
    finally:
        if child is not None:
            child.terminate()
            child.wait(timeout=30)


def _die_with_parent() -> None:
    """Linux: SIGTERM the worker when `serve` dies, even by SIGKILL, so no orphan keeps
    consuming the queue (a warm shutdown: the task in hand is redelivered, acks are late)."""
    if sys.platform.startswith("linux"):
        pr_set_pdeathsig = 1
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(pr_set_pdeathsig, signal.SIGTERM)


def _start_worker_process(queues: tuple[str, ...]) -> subprocess.Popen[bytes]:
    command = [sys.executable, "-m", "facespeech.cli", "worker", "--queues", ",".join(queues)]
    return subprocess.Popen(command, env=os.environ.copy(), preexec_fn=_die_with_parent)


@app.command()
def worker(
    queues: str = "preprocess,train,render",
    concurrency: int = 1,
    pool: Annotated[str, typer.Option(help="solo keeps CUDA and torch in one process")] = "solo",
    loglevel: str = "INFO",
    metrics_port: Annotated[int, typer.Option(help="serve /metrics on this port; 0: off")] = 9101,
) -> None:
    """Run a Celery worker on the given queues."""
    from facespeech.db.migrate import upgrade_head
    from facespeech.jobs.celery_app import get_celery
    from facespeech.jobs.reconcile import start_reconciler_thread
    from facespeech.observability.worker import serve_worker_metrics

    upgrade_head(get_settings().database_url)
    # At start (a restarted worker recovers the jobs its predecessor lost) and periodically.
    start_reconciler_thread()
    if metrics_port:
        serve_worker_metrics(get_settings(), metrics_port)
    argv = [
        "worker",
        "--queues",
        queues,
        "--concurrency",
        str(concurrency),
        "--pool",
        pool,
        "--loglevel",
        loglevel,
        "--hostname",
        f"{queues.replace(',', '-')}@%h",
        "--without-gossip",
        "--without-mingle",
    ]
    get_celery().worker_main(argv)


@app.command("create-tenant")
def create_tenant(name: str) -> None:
    """Create a tenant (or reuse one) and print a new API key for it, once."""
    from facespeech.api.security import create_tenant_with_key
    from facespeech.db.migrate import upgrade_head
    from facespeech.db.session import session_scope

    upgrade_head(get_settings().database_url)
    with session_scope() as session:
        tenant, key = create_tenant_with_key(session, name)
        console.print(f"tenant {tenant.id} ({name})")
    print(key)


@app.command("revoke-key")
def revoke_key(
    key: Annotated[str, typer.Argument(help="the full key, or its 10-character prefix")],
) -> None:
    """Revoke an API key; requests with it get 401 from then on."""
    from facespeech.api.security import revoke_key as revoke
    from facespeech.db.migrate import upgrade_head
    from facespeech.db.session import session_scope

    upgrade_head(get_settings().database_url)
    with session_scope() as session:
        count = revoke(session, key)
    console.print(f"revoked {count} key(s)")
    if count == 0:
        raise typer.Exit(1)


@app.command()
def preprocess(
    video: Path,
    out: Path,
    audio: Path | None = None,
    image_size: int = 512,
    min_seconds: Annotated[float, typer.Option(help="fail below this many usable seconds")] = 8.0,
    fan_weights: Annotated[
        Path | None, typer.Option(help="local face-alignment 2D-FAN TorchScript file")
    ] = None,
    held_out: Annotated[
        float, typer.Option(help="fraction of the clip's tail kept out of training")
    ] = 0.1,
    bfm_model: Annotated[
        Path | None, typer.Option(help="BFM09_model_info.mat: fit the Basel Face Model")
    ] = None,
    extra_video: Annotated[
        list[Path] | None,
        typer.Option(help="more video of the same person, trained on (repeat the option); "
                     "the held-out tail comes from VIDEO"),
    ] = None,
) -> None:
    """Turn a talking video into a dataset directory; run again to resume a stopped run."""
    from facespeech import preprocess as lib
    from facespeech.progress_bar import progress_bar

    config = lib.PreprocessConfig(
        image_size=image_size,
        min_seconds=min_seconds,
        fan_weights=str(fan_weights) if fan_weights else None,
        held_out_fraction=held_out,
        bfm_model=str(bfm_model) if bfm_model else None,
    )
    with progress_bar("preprocess") as (hook, _):
        report = lib.run(video, out, config, on_progress=hook, audio=audio,
                         extra_videos=extra_video or ())
    console.print_json(json.dumps(asdict(report)))


@app.command()
def train(
    dataset: Path,
    run_dir: Path,
    preset: str = "tiny",
    overrides: Annotated[str, typer.Option(help="JSON object of config fields")] = "{}",
    dry_run: Annotated[bool, typer.Option(help="print the resolved config and exit")] = False,
) -> None:
    """Train a model on a dataset directory; resumes from run_dir's newest checkpoint."""
    from facespeech import train as lib
    from facespeech.progress_bar import progress_bar

    config = lib.TrainConfig.from_preset(preset, json.loads(overrides))
    console.print_json(config.model_dump_json())
    if dry_run:
        return
    with progress_bar("train") as (hook, _):
        result = lib.run(dataset, run_dir, config, on_progress=hook)
    from facespeech import render

    render.embed(result.checkpoint, dataset)  # the model file alone is enough to render
    console.print(f"model: {result.checkpoint}")
    console.print_json(json.dumps(result.metrics))


@app.command()
def render(
    model: Path,
    audio: Path,
    out: Annotated[
        Path | None, typer.Option("-o", "--out", help="default out.mp4 (out.webm if transparent)")
    ] = None,
    dataset: Annotated[
        Path | None,
        typer.Option(
            help="the training dataset; only for a model file without embedded reference frames"
        ),
    ] = None,
    size: Annotated[
        int | None, typer.Option(help="output side, 256-1024; default the model's")
    ] = None,
    fps: int = 25,
    background: Annotated[
        str, typer.Option(help="reference | still | green | transparent (WebM with alpha)")
    ] = "reference",
    motion: Annotated[str, typer.Option(help="pingpong | still")] = "pingpong",
    blink_rate: Annotated[
        float | None, typer.Option(help="blinks per minute; default: the reference video's own")
    ] = None,
    batch_size: Annotated[int, typer.Option(help="0: 48 on CUDA, 8 on CPU")] = 0,
    compile_model: Annotated[bool, typer.Option("--compile", help="torch.compile (CUDA)")] = False,
) -> None:
    """Render speech audio into an mp4 (a WebM with alpha if transparent) with a trained model."""
    from pydantic import ValidationError

    from facespeech import render as lib
    from facespeech.progress_bar import progress_bar

    try:
        config = lib.RenderConfig.model_validate(
            {
                "size": size,
                "fps": fps,
                "background": background,
                "motion": motion,
                "blink_rate": blink_rate,
                "batch_size": batch_size,
                "compile": compile_model,
            }
        )
    except ValidationError as error:
        raise typer.BadParameter(str(error)) from error
    out = out or Path(f"out{config.suffix}")
    if out.suffix.lower() != config.suffix:
        raise typer.BadParameter(f"background {config.background} writes {config.suffix}; "
                                 f"name the output {out.with_suffix(config.suffix).name}")
    with progress_bar("render") as (hook, _):
        result = lib.run(model, dataset, audio, out, config, on_progress=hook)
    console.print(
        f"{out}: {result.frames} frames, {result.duration_s:.2f} s, "
        f"{result.frames / max(result.seconds_taken, 1e-6):.1f} frames/s"
    )


@app.command("eval")
def evaluate(
    checkpoint: Path,
    dataset: Path,
    out: Annotated[Path, typer.Option(help="folder for eval.json and grid.png")] = Path("eval"),
    audio: Annotated[
        list[Path] | None,
        typer.Option(
            help="other voices to drive the held-out poses with (lip-sync check); repeatable"
        ),
    ] = None,
    landmarks: Annotated[bool, typer.Option(help="mouth landmarks (MediaPipe) and sync")] = True,
    device: str = "auto",
    lpips_backbone: Annotated[Path | None, typer.Option(
        help="torchvision AlexNet weights (alexnet-owt-7be5be79.pth) to add LPIPS")] = None,
    lpips_linear: Annotated[Path | None, typer.Option(
        help="the LPIPS heads (lpips package: weights/v0.1/alex.pth)")] = None,
    syncnet: Annotated[Path | None, typer.Option(
        help="syncnet_python's syncnet_v2.model to add LSE-D / LSE-C")] = None,
) -> None:
    """Score a model on its dataset's held-out frames: paste-back, head and full-render
    PSNR/SSIM (+ LPIPS given local weights), lip sync, beside the nearest-pose-frame,
    static-frame and audio-retrieval baselines."""
    from rich.table import Table

    from facespeech.quality import evaluate as lib

    if (lpips_backbone is None) != (lpips_linear is None):
        raise typer.BadParameter("LPIPS needs both --lpips-backbone and --lpips-linear")
    weights = (lpips_backbone, lpips_linear) if lpips_backbone and lpips_linear else None
    result = lib.evaluate(checkpoint, dataset, device, landmarks, grid=out / "grid.png",
                          lpips_weights=weights, syncnet_weights=syncnet)
    if audio:
        result["other_audio"] = lib.other_audio_sync(checkpoint, dataset, audio, device)
    out.mkdir(parents=True, exist_ok=True)
    (out / "eval.json").write_text(json.dumps(result, indent=2))
    methods = list(result["scores"])  # lib.METHODS, and more for some models
    table = Table("protocol", "metric", *methods, title=f"{result['frames']} held-out frames")
    for protocol in lib.PROTOCOLS:
        for metric in ("psnr", "ssim", "lpips"):
            if metric not in result["scores"]["ours"][protocol]:
                continue
            table.add_row(
                protocol,
                metric,
                *(f"{result['scores'][m][protocol][metric]:.3f}" for m in methods),
            )
    for metric in ("lmd", "mouth_open_corr", "av_offset_frames"):
        if "sync" in result:
            values = [result["sync"][m].get(metric, float("nan")) for m in methods]
            table.add_row("paste_back", metric, *(f"{v:.3f}" for v in values))
    for metric in ("lse_d", "lse_c", "offset_frames") if "syncnet" in result else ():
        values = [result["syncnet"][m].get(metric, float("nan")) for m in methods]
        table.add_row("paste_back", f"syncnet {metric}", *(f"{v:.3f}" for v in values))
    console.print(table)
    if "syncnet" in result:
        real = result["syncnet"]["real"]
        console.print(f"SyncNet on the real held-out frames: LSE-D {real['lse_d']:.3f}, "
                      f"LSE-C {real['lse_c']:.3f}, offset {real['offset_frames']:+.0f}")
    if "sync_tracked_motion" in result:
        forced = result["sync_tracked_motion"]
        console.print(f"driven by the tracked motion codes instead of the audio: LMD "
                      f"{forced['lmd']:.3f}, mouth-opening correlation "
                      f"{forced['mouth_open_corr']:.3f}")
    console.print(f"written: {out / 'eval.json'}, {out / 'grid.png'}")


@app.command()
def demo(
    video: Annotated[Path | None, typer.Option(help="a talking video; default: a sample")] = None,
    audio: Annotated[Path | None, typer.Option(help="speech to render; default: a sample")] = None,
    preset: str = "tiny",
    port: int = 8765,
) -> None:
    """Run the whole flow over HTTP on the embedded stack and print where the video is."""
    from facespeech.demo import run_demo

    run_demo(video, audio, preset, port, console)


if __name__ == "__main__":
    app()
