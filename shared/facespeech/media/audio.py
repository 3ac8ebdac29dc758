"""Audio of any container as float32 mono at one sample rate."""

from __future__ import annotations

from pathlib import Path

import av
import numpy as np

from facespeech.errors import InputError
from facespeech.media._open import open_input


def load_audio(
    path: Path, sample_rate: int = 16_000, max_seconds: float | None = None
) -> np.ndarray:
    """Decode the first audio stream of `path` to float32 mono in [-1, 1] at `sample_rate`.

    Works for wav/mp3/m4a/flac/ogg and for the audio track of a video. With `max_seconds`,
    a longer file is refused from its header when the container states its duration, and
    while decoding otherwise (so a header that lies cannot make us decode hours of audio).
    """
    with open_input(path) as container:
        if not container.streams.audio:
            raise InputError(f"{path.name}: no audio stream")
        stream = container.streams.audio[0]
        if max_seconds is not None and container.duration is not None:
            _check_length(path, container.duration / 1_000_000, max_seconds)
        # Keep the channels and average them ourselves: swresample's stereo->mono matrix
        # adds both channels at -3 dB each, which clips loud, correlated stereo.
        resampler = av.AudioResampler(format="fltp", rate=sample_rate)
        chunks: list[np.ndarray] = []
        n_samples = 0
        for frame in container.decode(stream):
            for resampled in resampler.resample(frame):
                chunks.append(resampled.to_ndarray().mean(axis=0))
                n_samples += chunks[-1].size
            if max_seconds is not None:
                _check_length(path, n_samples / sample_rate, max_seconds)
        for resampled in resampler.resample(None):
            chunks.append(resampled.to_ndarray().mean(axis=0))
    if not chunks:
        raise InputError(f"{path.name}: the audio stream has no decodable samples")
    wave = np.concatenate(chunks).astype(np.float32, copy=False)
    return np.clip(wave, -1.0, 1.0)


def _check_length(path: Path, seconds: float, max_seconds: float) -> None:
    if seconds > max_seconds:
        raise InputError(
            f"{path.name}: audio is {seconds:.1f} s long, more than the limit of {max_seconds:g} s"
        )
