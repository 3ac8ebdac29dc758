"""A whole-file check for uploads: every packet the container promises is really there.

A truncated mp4 whose index sits at the front (faststart) probes fine; only reading to the
end shows that its data stops early. Demuxing without decoding reads each packet once, so
this costs a pass over the file's bytes, not a decode.
"""

from __future__ import annotations

from pathlib import Path

from facespeech.errors import InputError
from facespeech.media._open import open_input


def verify_complete(path: Path) -> None:
    """Raise InputError if a stream has fewer packets, or fewer bytes, than declared."""
    with open_input(path) as container:
        streams = [s for s in container.streams if s.type in ("video", "audio")]
        declared = {s.index: s.frames for s in streams}
        counted = dict.fromkeys(declared, 0)
        last_end = 0
        for packet in container.demux(streams):
            if packet.size == 0:
                continue
            counted[packet.stream.index] += 1
            if packet.pos is not None and packet.pos >= 0:
                last_end = max(last_end, packet.pos + packet.size)
    file_size = path.stat().st_size
    for index, expected in declared.items():
        if expected and counted[index] < expected:
            raise InputError(
                f"{path.name}: truncated: stream {index} has {counted[index]} of its "
                f"{expected} packets"
            )
    if last_end > file_size:
        raise InputError(f"{path.name}: truncated: data runs past the end of the file")
