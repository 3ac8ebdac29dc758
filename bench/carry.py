"""Pack a preprocessed dataset small enough to travel to the device, and unpack it there.

    python -m bench.carry pack .devdata/joined .gpudata/joined.tar.xz     # here
    python -m bench.carry unpack .gpudata/joined.tar.xz .gpuwork/joined  # on the device

The device call carries at most 64 MiB with the working tree. Training reads the crops, the
masks, the metadata and the audio features; it does not read the sound itself, the joined
source video, the 3D landmarks or the contact sheet, so those stay behind. Crops travel as
WebP (quality 90, about half a JPEG's size) and are written back as JPEG on arrival, so
training reads the dataset layout it always does.
"""

from __future__ import annotations

import io
import os
import tarfile
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import typer
from PIL import Image

from facespeech.dataset import image_path, read_tracks

app = typer.Typer(add_completion=False)

LEFT_BEHIND = (".join/", "audio/", "metadata/landmarks3d", "contact_sheet")
WEBP_QUALITY = 90
# Crops of frames the split names neither for training nor for holding out (the other take of
# a split_view --main-video-only view): training loads them with the rest but never draws one.
UNUSED_QUALITY = 10
JPEG_QUALITY = 95


def _travels(relative: str) -> bool:
    return not relative.startswith(LEFT_BEHIND)


def _is_crop(relative: str) -> bool:
    return relative.startswith("images/") and relative.endswith(".jpg")


def _as_webp(path: Path, quality: int = WEBP_QUALITY) -> bytes:
    buffer = io.BytesIO()
    Image.open(path).save(buffer, "WEBP", quality=quality, method=4)
    return buffer.getvalue()


def _add_bytes(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    tar.addfile(info, io.BytesIO(data))


def _files_under(root: Path) -> list[Path]:
    """Every file below root, through symbolic links too: split_view's views are links."""
    return sorted(Path(folder) / name for folder, _, names in os.walk(root, followlinks=True)
                  for name in names)


def _split_crops(dataset: Path) -> set[str]:
    """The crops (relative paths) of every frame the split names."""
    return {image_path(Path(), track.person, frame).as_posix()
            for track in read_tracks(dataset)
            for frame in track.train_frames + track.held_out_frames}


@app.command()
def pack(dataset: Path, archive: Path, quality: int = WEBP_QUALITY,
         unused_quality: int = UNUSED_QUALITY) -> None:
    files = _files_under(dataset)
    relatives = [p.relative_to(dataset).as_posix() for p in files]
    kept = [(p, r) for p, r in zip(files, relatives, strict=True) if _travels(r)]
    named = _split_crops(dataset)
    crops = [p for p, r in kept if _is_crop(r)]
    qualities = [quality if r in named else unused_quality for _, r in kept if _is_crop(r)]
    with ProcessPoolExecutor() as pool:
        encoded = pool.map(_as_webp, crops, qualities, chunksize=32)
        webps = dict(zip(crops, encoded, strict=True))
    archive.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(archive, "w:xz", preset=6, dereference=True) as tar:
        for path, relative in kept:
            if path in webps:
                _add_bytes(tar, relative[: -len(".jpg")] + ".webp", webps[path])
            else:
                tar.add(path, relative)
    print(f"{archive}: {archive.stat().st_size / 1e6:.2f} MB, {len(kept)} files")


def _webp_to_jpeg(path: Path) -> None:
    Image.open(path).convert("RGB").save(path.with_suffix(".jpg"), quality=JPEG_QUALITY)
    path.unlink()


@app.command()
def unpack(archive: Path, dataset: Path) -> None:
    dataset.mkdir(parents=True, exist_ok=True)
    with tarfile.open(archive) as tar:
        tar.extractall(dataset, filter="data")
    webps = sorted(dataset.glob("images/**/*.webp"))
    with ProcessPoolExecutor(max_workers=min(12, os.cpu_count() or 1)) as pool:
        list(pool.map(_webp_to_jpeg, webps, chunksize=32))
    print(f"{dataset}: {len(webps)} crops")


if __name__ == "__main__":
    app()
