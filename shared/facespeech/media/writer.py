"""Streamed video writing: H.264 + AAC mp4, or VP9 with alpha + Opus WebM."""

from __future__ import annotations

import logging
from fractions import Fraction
from pathlib import Path
from types import TracebackType

import av
import numpy as np

log = logging.getLogger(__name__)

# veryfast keeps CPU encoding well above render speed at a small size cost; crf sets quality.
X264_PRESET = "veryfast"
AUDIO_BIT_RATE = 128_000
# VP9 with an alpha plane, for frames composited over anything later. Realtime deadline and
# cpu-used 8: libvpx's fastest settings, still several times real time at 512^2 on two cores.
VP9_OPTIONS = {"b": "0", "deadline": "realtime", "cpu-used": "8", "row-mt": "1"}
VP9_CRF_OFFSET = 11  # VP9's crf scale runs higher than x264's for a like quality


class VideoWriter:
    """Write RGB frames (and optional mono audio) to an mp4 that plays everywhere, or, with
    alpha=True, RGBA frames to a WebM (VP9 yuva420p + Opus) that browsers composite.

    Frames go to the encoder as they come, so memory stays flat for long videos. Audio is
    fed alongside the frames (up to each frame's end time) and the muxer interleaves both.
    Write ceil(audio_seconds * fps) frames for a video as long as its audio (within a frame).
    """

    def __init__(
        self,
        path: Path,
        fps: int,
        width: int,
        height: int,
        audio: np.ndarray | None = None,
        sample_rate: int = 16_000,
        crf: int = 20,
        prefer_gpu_encoder: bool = False,
        alpha: bool = False,
    ) -> None:
        if width % 2 or height % 2:
            raise ValueError(f"yuv420p needs even frame sizes, got {width}x{height}")
        self.path, self.fps, self.width, self.height = path, fps, width, height
        self.sample_rate, self.alpha = sample_rate, alpha
        self._audio = None if audio is None else _as_mono_float32(audio)
        self._audio_written = 0
        self._frames_written = 0
        path.parent.mkdir(parents=True, exist_ok=True)
        if alpha:
            self._container = av.open(str(path), mode="w", format="webm")
            self._video = self._add_alpha_stream(crf)
        else:
            self._container = av.open(
                str(path), mode="w", format="mp4", options={"movflags": "+faststart"}
            )
            self._video = self._add_video_stream(crf, prefer_gpu_encoder)
        self._audio_stream = None
        if self._audio is not None:
            codec = "libopus" if alpha else "aac"
            self._audio_stream = self._container.add_stream(codec, rate=sample_rate)
            self._audio_stream.layout = "mono"
            self._audio_stream.bit_rate = AUDIO_BIT_RATE

    def _add_video_stream(self, crf: int, prefer_gpu_encoder: bool) -> av.VideoStream:
        use_nvenc = prefer_gpu_encoder and _nvenc_works(self.width, self.height)
        codec = "h264_nvenc" if use_nvenc else "libx264"
        options = (
            {"preset": "p4", "rc": "vbr", "cq": str(crf)}
            if codec == "h264_nvenc"
            else {"preset": X264_PRESET, "crf": str(crf)}
        )
        stream = self._container.add_stream(codec, rate=self.fps, options=options)
        stream.width, stream.height, stream.pix_fmt = self.width, self.height, "yuv420p"
        return stream

    def _add_alpha_stream(self, crf: int) -> av.VideoStream:
        options = {**VP9_OPTIONS, "crf": str(min(crf + VP9_CRF_OFFSET, 63))}
        stream = self._container.add_stream("libvpx-vp9", rate=self.fps, options=options)
        stream.width, stream.height, stream.pix_fmt = self.width, self.height, "yuva420p"
        return stream

    def write_rgba(self, frame: np.ndarray) -> None:
        """uint8 (height, width, 4), straight (not premultiplied) alpha; alpha=True only."""
        if not self.alpha:
            raise ValueError("this writer has no alpha channel; open it with alpha=True")
        if frame.shape != (self.height, self.width, 4) or frame.dtype != np.uint8:
            raise ValueError(f"expected uint8 frame of shape {(self.height, self.width, 4)}, "
                             f"got {frame.dtype} {frame.shape}")
        video_frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(frame), format="rgba")
        self._encode(video_frame.reformat(format="yuva420p"))

    def write(self, frame: np.ndarray) -> None:
        if frame.shape != (self.height, self.width, 3) or frame.dtype != np.uint8:
            raise ValueError(
                f"expected uint8 frame of shape {(self.height, self.width, 3)}, "
                f"got {frame.dtype} {frame.shape}"
            )
        video_frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(frame), format="rgb24")
        self._encode(video_frame.reformat(format="yuv420p"))

    def write_yuv420p(self, planes: np.ndarray) -> None:
        """A frame already in the encoder's format (converted on the GPU by the renderer):
        uint8 (height * 3 // 2, width), the Y plane, then U, then V, each row-major."""
        if planes.shape != (self.height * 3 // 2, self.width) or planes.dtype != np.uint8:
            raise ValueError(
                f"expected uint8 yuv420p planes of shape {(self.height * 3 // 2, self.width)}, "
                f"got {planes.dtype} {planes.shape}"
            )
        self._encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(planes), format="yuv420p"))

    def _encode(self, video_frame: av.VideoFrame) -> None:
        video_frame.pts = self._frames_written
        self._frames_written += 1
        self._container.mux(self._video.encode(video_frame))
        self._write_audio_until(self._frames_written / self.fps)

    def _write_audio_until(self, seconds: float) -> None:
        if self._audio is None or self._audio_stream is None:
            return
        end = self._audio.size if seconds == float("inf") else round(seconds * self.sample_rate)
        end = min(end, self._audio.size)
        if end <= self._audio_written:
            return
        chunk = self._audio[self._audio_written : end].reshape(1, -1)
        audio_frame = av.AudioFrame.from_ndarray(chunk, format="flt", layout="mono")
        audio_frame.sample_rate = self.sample_rate
        audio_frame.pts = self._audio_written
        self._audio_written = end
        self._container.mux(self._audio_stream.encode(audio_frame))

    def close(self) -> None:
        if self._container is None:
            return
        self._write_audio_until(float("inf"))
        self._container.mux(self._video.encode(None))
        if self._audio_stream is not None:
            self._container.mux(self._audio_stream.encode(None))
        self._container.close()
        self._container = None

    def __enter__(self) -> VideoWriter:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()


def _as_mono_float32(audio: np.ndarray) -> np.ndarray:
    wave = np.asarray(audio, dtype=np.float32)
    if wave.ndim == 2:  # (samples, channels)
        wave = wave.mean(axis=1)
    return np.ascontiguousarray(np.clip(wave, -1.0, 1.0))


def _nvenc_works(width: int, height: int) -> bool:
    """h264_nvenc is often compiled in but has no GPU behind it; open it once to know."""
    if "h264_nvenc" not in av.codecs_available:
        return False
    try:
        context = av.CodecContext.create("h264_nvenc", "w")
        context.width, context.height, context.pix_fmt = width, height, "yuv420p"
        context.time_base = Fraction(1, 25)
        context.open()
    except Exception as error:  # any failure means: use libx264
        log.info("h264_nvenc unavailable (%s); using libx264", error)
        return False
    return True
