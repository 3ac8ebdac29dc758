"""Preprocess a 3-minute 25 fps 720p talking video; report time, peak memory and jitter.

    python -m bench.preprocess_bench [--seconds 180] [--image-size 512] [--work DIR]

The video is built once by looping ../shared/data/video/obama_dnc2020_cspan_64s.mp4 (a real
720p broadcast clip with camera zooms) and written with media.VideoWriter into the work
folder (default: a folder under the system temp dir; nothing is committed). Peak memory is
sampled from /proc for this process and its children (the tracking process) together.
"""

from __future__ import annotations

import json
import os
import resource
import tempfile
import threading
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np
import typer

from facespeech import dataset
from facespeech.media import VideoWriter, iter_video_frames, load_audio, probe
from facespeech.preprocess import PreprocessConfig, run

SOURCE = Path(__file__).resolve().parents[2] / "shared" / "data" / "video" / (
    "obama_dnc2020_cspan_64s.mp4")


def build_looped_video(source: Path, target: Path, seconds: float) -> Path:
    """`seconds` of `source` at 25 fps, looped, with its audio looped alongside."""
    if target.is_file() and abs(probe(target).duration_s - seconds) < 0.5:
        return target
    frames_needed = round(seconds * dataset.FPS)
    audio = load_audio(source, dataset.SAMPLE_RATE)
    loops = -(-frames_needed // max(1, round(len(audio) / dataset.SAMPLE_RATE * dataset.FPS)))
    looped_audio = np.tile(audio, loops + 1)[: round(seconds * dataset.SAMPLE_RATE)]
    info = probe(source)
    tmp = target.with_suffix(".tmp.mp4")
    written = 0
    with VideoWriter(tmp, dataset.FPS, info.width, info.height, audio=looped_audio,
                     sample_rate=dataset.SAMPLE_RATE) as writer:
        while written < frames_needed:
            for frame in iter_video_frames(source, dataset.FPS):
                writer.write(frame)
                written += 1
                if written >= frames_needed:
                    break
    tmp.replace(target)
    return target


class PeakMemory:
    """Samples the summed RSS of this process and its child processes."""

    def __init__(self, every_s: float = 0.25) -> None:
        self.every_s, self.peak_bytes = every_s, 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def __enter__(self) -> PeakMemory:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join()

    def _sample(self) -> None:
        while not self._stop.wait(self.every_s):
            self.peak_bytes = max(self.peak_bytes, _tree_rss(os.getpid()))


def _tree_rss(pid: int) -> int:
    total = _rss(pid)
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:  # ppid
            total += _tree_rss(int(entry.name))
    return total


def _rss(pid: int) -> int:
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return 0
    for line in status.splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


def main(
    seconds: float = 180.0,
    image_size: int = 512,
    work: Path = Path(tempfile.gettempdir()) / "facespeech_preprocess_bench",  # noqa: B008
) -> None:
    if not SOURCE.is_file():
        raise SystemExit(f"{SOURCE} is absent: the bench needs the shared data folder")
    work.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    video = build_looped_video(SOURCE, work / f"obama_dnc_{seconds:g}s_25fps.mp4", seconds)
    build_s = time.monotonic() - started
    out = work / "dataset"
    load_before = os.getloadavg()
    started = time.monotonic()
    cpu_before = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(
        resource.RUSAGE_CHILDREN)
    with PeakMemory() as memory:
        report = run(video, out, PreprocessConfig(image_size=image_size))
    wall_s = time.monotonic() - started
    cpu_after = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(
        resource.RUSAGE_CHILDREN)
    cpu_s = [round(a.ru_utime + a.ru_stime - b.ru_utime - b.ru_stime, 1)
             for a, b in zip(cpu_after, cpu_before, strict=True)]
    result = {
        "video": {"seconds": seconds, "frames": report.frames + len(report.dropped_frames),
                  "size": f"{probe(video).width}x{probe(video).height}",
                  "build_s": round(build_s, 1)},
        "wall_s": round(wall_s, 1),
        "stage_seconds": report.stage_seconds,
        "frames_per_s": round(report.frames / wall_s, 1),
        # CPU seconds of this process (decode, regions, crops, writes) and of the tracking
        # process: with the machine to itself the wall time nears their maximum
        "cpu_s_main_and_tracker": cpu_s,
        "peak_rss_gib": round(memory.peak_bytes / 2**30, 3),
        "load_average_before": [round(x, 2) for x in load_before],
        "load_average_after": [round(x, 2) for x in os.getloadavg()],
        "cpu_count": os.cpu_count(),
        "landmark_jitter": report.landmark_jitter,
        "dropped_frames": len(report.dropped_frames),
        "interpolated_frames": len(report.interpolated_frames),
        "checks": [asdict(c) for c in report.checks],
        "files": report.files,
        "dataset": str(out),
    }
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    typer.run(main)
