"""Opening a media file with PyAV and turning its failures into InputError."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import av
from av.container import InputContainer

from facespeech.errors import InputError


@contextmanager
def open_input(path: Path) -> Iterator[InputContainer]:
    """Open `path` for reading; every FFmpeg failure inside the block becomes an InputError."""
    if not path.is_file():
        raise InputError(f"{path.name}: file not found")
    if path.stat().st_size == 0:
        raise InputError(f"{path.name}: the file is empty (0 bytes)")
    try:
        container = av.open(str(path), mode="r")
    except (av.error.FFmpegError, UnicodeDecodeError) as error:
        raise InputError(f"{path.name}: not a readable audio/video file ({error})") from error
    try:
        yield container
    except av.error.FFmpegError as error:
        raise InputError(f"{path.name}: the file is corrupt or truncated ({error})") from error
    finally:
        container.close()
