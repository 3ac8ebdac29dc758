"""Render throughput: model forward + composite (+ RGB -> yuv420p) frames per second.

    python -m bench.render_throughput OUT --sizes 512,1024 --batches 8,16,32,48,64,96,128

A `fast`-preset model (image_size set per size) with random weights renders over a synthetic
reference set: throughput does not depend on the weights. Per size and variant (eager bf16,
torch.compile) and batch size: median FPS over timed batches (CUDA events), the peak memory
of a batch, and the largest batch that fits. Then, at the best batch of the first size: a
torch.profiler table, the encoder alone (frames/s) and a whole 60 s render through
Renderer.render (features, render + encode overlapped). Results: OUT/render_throughput.json.
"""

from __future__ import annotations

import json
import statistics
import tempfile
import time
from pathlib import Path
from typing import Annotated, Any

import soundfile
import torch
import typer

from facespeech.dataset import SAMPLE_RATE, read_tracks
from facespeech.media import VideoWriter
from facespeech.model import TalkingHead
from facespeech.render import RenderConfig, Renderer
from facespeech.render import reference as references
from facespeech.render.encode import rgb_to_yuv420p
from facespeech.render.features import MelWindows, silence_mel, speech_mel
from facespeech.train import TrainConfig
from facespeech.train.data import PoseNormaliser
from facespeech.train.synthetic import make_synthetic_dataset, synthetic_voice

app = typer.Typer(add_completion=False)


def _renderer(root: Path, size: int, compile_model: bool) -> Renderer:
    dataset = root / f"synthetic-{size}"
    if not dataset.exists():
        make_synthetic_dataset(dataset, seconds=10.0, size=size)
    model_config = TrainConfig.from_preset("fast", {"image_size": size}).to_model_config()
    track = read_tracks(dataset)[0]
    data: dict[str, Any] = {
        "fps": 25, "person": track.person, "source_image_size": size, "audio_mean": -5.0,
        "audio_std": 3.0,
        "pose_normaliser": PoseNormaliser.fit(track.poses).__dict__,
    }
    torch.manual_seed(0)
    model = TalkingHead(model_config).cuda().eval().requires_grad_(False)
    model.upsampler.to(memory_format=torch.channels_last)
    reference = references.from_dataset(dataset, data, model_config)
    return Renderer(model, data, reference, silence_mel(None), torch.device("cuda"),
                    compile_model)


def _step(renderer: Renderer, windows: MelWindows, batch: int, start: int) -> torch.Tensor:
    config = RenderConfig()
    frames = torch.arange(start, start + batch, device="cuda") % windows.n_frames
    rows = frames % len(renderer.reference)
    composite = renderer.composite(frames, rows, renderer.reference.blink[rows], windows,
                                   renderer._masks(config), config)
    return rgb_to_yuv420p(composite)


def _time_batch(renderer: Renderer, windows: MelWindows, batch: int, repeats: int
                ) -> tuple[float, float]:
    """-> (frames per second, peak GiB) for one batch size."""
    with torch.inference_mode():
        for i in range(3):
            _step(renderer, windows, batch, i * batch)
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        times = []
        for i in range(repeats):
            begin, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            begin.record()
            _step(renderer, windows, batch, (i + 3) * batch)
            end.record()
            end.synchronize()
            times.append(begin.elapsed_time(end) / 1000)
    peak = torch.cuda.max_memory_allocated() / 2**30
    return batch / statistics.median(times), peak


def _largest_batch(renderer: Renderer, windows: MelWindows, start: int, limit: int) -> int:
    """Double the batch until a forward pass runs out of memory (or `limit`)."""
    fits, batch = 0, start
    while batch <= limit:
        try:
            with torch.inference_mode():
                _step(renderer, windows, batch, 0)
            torch.cuda.synchronize()
            fits, batch = batch, batch * 2
        except torch.OutOfMemoryError:
            break
        finally:
            torch.cuda.empty_cache()
    return fits


def _encoder_fps(size: int, frames: torch.Tensor, gpu: bool) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "x.mp4"
        host = frames.cpu().numpy()
        started = time.perf_counter()
        with VideoWriter(path, 25, size, size, prefer_gpu_encoder=gpu) as writer:
            codec = writer._video.codec_context.name
            for i in range(200):
                writer.write_yuv420p(host[i % len(host)])
        return {"codec": codec, "fps": 200 / (time.perf_counter() - started)}


@app.command()
def main(
    out: Path,
    sizes: Annotated[str, typer.Option()] = "512,1024",
    batches: Annotated[str, typer.Option()] = "8,16,32,48,64,96,128",
    variants: Annotated[str, typer.Option()] = "eager,compiled",
    repeats: int = 10,
) -> None:
    out.mkdir(parents=True, exist_ok=True)
    root = Path(tempfile.mkdtemp())
    wave = synthetic_voice(60.0, seed=1)
    mel = speech_mel(wave, silence_mel(None))
    results: dict[str, Any] = {"device": torch.cuda.get_device_name(), "torch": torch.__version__,
                               "throughput": []}
    for size in [int(s) for s in sizes.split(",")]:
        for variant in variants.split(","):
            torch.cuda.empty_cache()
            before = torch.cuda.memory_allocated()
            renderer = _renderer(root, size, variant == "compiled")
            renderer._masks(RenderConfig())
            held = (torch.cuda.memory_allocated() - before) / 2**30
            windows = MelWindows(mel, renderer.pause, 1500, 25, -5.0, 3.0,
                                 renderer.config.audio_window, renderer.config.audio_neighbours,
                                 renderer.device)
            row: dict[str, Any] = {"size": size, "variant": variant, "warm_model_gib": held,
                                   "batches": {}}
            if variant == "compiled":
                started = time.perf_counter()
                with torch.inference_mode():
                    _step(renderer, windows, 48, 0)
                torch.cuda.synchronize()
                row["compile_s_batch48"] = time.perf_counter() - started
            for batch in [int(b) for b in batches.split(",")]:
                if variant == "compiled" and batch not in (48, 96):
                    continue  # each batch size compiles its own graph: time two of them
                try:
                    fps, peak = _time_batch(renderer, windows, batch, repeats)
                except torch.OutOfMemoryError:
                    torch.cuda.empty_cache()
                    break
                row["batches"][batch] = {"fps": round(fps, 1), "peak_gib": round(peak, 2)}
                print(f"{size}^2 {variant:8s} batch {batch:4d}: {fps:7.1f} fps, "
                      f"peak {peak:5.1f} GiB", flush=True)
            if variant == "eager":
                row["largest_batch"] = _largest_batch(renderer, windows, 128, 4096)
                print(f"{size}^2 largest batch: {row['largest_batch']}", flush=True)
            results["throughput"].append(row)
            json.dump(results, (out / "render_throughput.json").open("w"), indent=2)
            del renderer, windows
    _profile_and_end_to_end(root, int(sizes.split(",")[0]), results, out)
    json.dump(results, (out / "render_throughput.json").open("w"), indent=2)


def _profile_and_end_to_end(root: Path, size: int, results: dict[str, Any], out: Path) -> None:
    renderer = _renderer(root, size, compile_model=False)
    wave = synthetic_voice(60.0, seed=1)
    started = time.perf_counter()
    mel = speech_mel(wave, renderer.pause)
    results["features_60s_s"] = time.perf_counter() - started
    windows = MelWindows(mel, renderer.pause, 1500, 25, -5.0, 3.0, renderer.config.audio_window,
                         renderer.config.audio_neighbours, renderer.device)
    from torch.profiler import ProfilerActivity, profile

    with torch.inference_mode():
        frames = _step(renderer, windows, 48, 0)
        torch.cuda.synchronize()
        with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
            for i in range(3):
                _step(renderer, windows, 48, i * 48)
            torch.cuda.synchronize()
    (out / f"profile_{size}.txt").write_text(
        prof.key_averages().table(sort_by="cuda_time_total", row_limit=25))
    results["encoder"] = [_encoder_fps(size, frames, gpu) for gpu in (True, False)]
    print("encoder:", results["encoder"], flush=True)
    audio = root / "speech60.wav"
    soundfile.write(audio, wave, SAMPLE_RATE)
    for batch in (16, 48, 96):
        result = renderer.render(audio, root / "e2e.mp4", RenderConfig(batch_size=batch))
        entry = {"batch": batch, "seconds": result.seconds_taken, "frames": result.frames,
                 "fps": result.frames / result.seconds_taken,
                 "timings": {k: round(v, 3) for k, v in result.timings.items()}}
        results.setdefault("end_to_end_60s", []).append(entry)
        print("end-to-end 60 s:", entry, flush=True)


if __name__ == "__main__":
    app()
