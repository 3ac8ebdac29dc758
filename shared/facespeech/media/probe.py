"""What a media file holds: streams, size, frame rate, duration."""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

from av.container import InputContainer

from facespeech.errors import InputError
from facespeech.media._open import open_input


@dataclass(frozen=True)
class MediaInfo:
    duration_s: float
    has_video: bool
    has_audio: bool
    width: int = 0
    height: int = 0
    fps: float = 0.0
    sample_rate: int = 0
    channels: int = 0
    video_codec: str = ""
    audio_codec: str = ""
    rotation: int = 0  # display rotation, degrees counterclockwise; width/height are upright


def probe(path: Path) -> MediaInfo:
    """Read the container header and decode the first frame of each stream.

    Decoding one frame is what catches truncated or corrupt files whose header still parses.
    """
    with open_input(path) as container:
        video = container.streams.video[0] if container.streams.video else None
        audio = container.streams.audio[0] if container.streams.audio else None
        if video is None and audio is None:
            raise InputError(f"{path.name}: no audio or video stream")
        rotation = _decode_first_frames(container, path)
        width = video.codec_context.width if video else 0
        height = video.codec_context.height if video else 0
        if rotation % 180:
            width, height = height, width
        return MediaInfo(
            duration_s=_duration_s(container),
            has_video=video is not None,
            has_audio=audio is not None,
            width=width,
            height=height,
            rotation=rotation,
            fps=float(video.average_rate or video.guessed_rate or 0) if video else 0.0,
            sample_rate=audio.codec_context.sample_rate if audio else 0,
            channels=audio.codec_context.channels if audio else 0,
            video_codec=video.codec_context.name if video else "",
            audio_codec=audio.codec_context.name if audio else "",
        )


def _decode_first_frames(container: InputContainer, path: Path) -> int:
    """Decode one frame per stream; the video frame's display rotation (degrees)."""
    rotation = 0
    for stream in (*container.streams.video[:1], *container.streams.audio[:1]):
        frame = next(container.decode(stream), None)
        if frame is None:
            raise InputError(f"{path.name}: the {stream.type} stream has no decodable frame")
        if stream.type == "video":
            rotation = round(frame.rotation / 90) % 4 * 90
    return rotation


def _duration_s(container: InputContainer) -> float:
    if container.duration is not None:
        return container.duration / 1_000_000  # AV_TIME_BASE
    durations = [
        float(s.duration * Fraction(s.time_base))
        for s in container.streams
        if s.duration is not None and s.time_base is not None
    ]
    return max(durations, default=0.0)
