"""Speech audio -> the model's mel windows, in chunks, with pauses mapped to trained silence.

The log-mel is computed 30 s at a time (librosa's STFT of a whole 10-minute file holds
several copies of it in float64), and the per-frame windows are gathered on the device batch
by batch, so memory stays flat for long audio. Frames quieter than SILENCE_BELOW_SPEECH_DB
under the speech level are replaced by the quietest mel the model heard in training: room
noise amplified by loudness normalisation would otherwise move the mouth in pauses.
"""

from __future__ import annotations

import librosa
import numpy as np
import torch

from facespeech.dataset import MEL_HZ, N_MELS, SAMPLE_RATE
from facespeech.errors import InputError
from facespeech.preprocess.audio_features import (
    MEL_FLOOR,
    SILENCE,
    TARGET_SPEECH_DBFS,
    WINDOW_SECONDS,
    normalise_loudness,
    speech_rms,
)

CHUNK_SECONDS = 30.0
SILENCE_BELOW_SPEECH_DB = 35.0
SILENT_FILE_RMS = 1e-3  # -60 dBFS speech level: nothing to say (the preprocess threshold too)


def silence_mel(training_mel: np.ndarray | None) -> np.ndarray:
    """(N_MELS,) per-band 2nd percentile of the training mel: its pauses; SILENCE without it."""
    if training_mel is None or not len(training_mel):
        return np.full(N_MELS, SILENCE, np.float32)
    return np.percentile(training_mel, 2, axis=0).astype(np.float32)


def speech_mel(wave: np.ndarray, pause: np.ndarray) -> np.ndarray:
    """16 kHz mono wave -> (T, N_MELS) log-mel as log_mel computes it, pauses set to `pause`."""
    if speech_rms(wave) < SILENT_FILE_RMS:
        raise InputError("the audio is silent (speech level below -60 dBFS): nothing to say")
    wave = normalise_loudness(wave)
    hop = SAMPLE_RATE // MEL_HZ
    n_fft = round(WINDOW_SECONDS * SAMPLE_RATE)
    # log_mel centres frame t on sample t * hop with zero padding (librosa center=True,
    # pad_mode="constant"); padding once here lets chunks be cut with center=False.
    padded = np.pad(wave, n_fft // 2)
    n_mel = 1 + len(wave) // hop
    chunk = int(CHUNK_SECONDS * MEL_HZ)
    mel = np.empty((n_mel, N_MELS), np.float32)
    energy = np.empty(n_mel, np.float32)
    for start in range(0, n_mel, chunk):
        end = min(start + chunk, n_mel)
        piece = padded[start * hop : (end - 1) * hop + n_fft]
        mel[start:end] = _log_mel_uncentred(piece, hop, n_fft)
        frames = librosa.util.frame(piece, frame_length=n_fft, hop_length=hop)
        energy[start:end] = np.mean(np.square(frames), axis=0)
    gate = 10 ** ((TARGET_SPEECH_DBFS - SILENCE_BELOW_SPEECH_DB) / 10)  # power
    mel[energy < gate] = pause
    return mel


def _log_mel_uncentred(piece: np.ndarray, hop: int, n_fft: int) -> np.ndarray:
    power = librosa.feature.melspectrogram(
        y=piece, sr=SAMPLE_RATE, n_fft=n_fft, hop_length=hop, win_length=n_fft, n_mels=N_MELS,
        center=False, power=2.0,
    )
    return np.log(np.maximum(power, MEL_FLOOR)).T


class MelWindows:
    """The (K, W, n_mels) model input of any video frame, gathered on the device."""

    def __init__(
        self, mel: np.ndarray, pause: np.ndarray, n_frames: int, fps: int, mean: float,
        std: float, window: int, neighbours: int, device: torch.device,
    ) -> None:
        self.n_frames, self.fps, self.window, self.neighbours = n_frames, fps, window, neighbours
        self.pad = window  # rows of pause before and after: windows at the ends read them
        rows = np.concatenate([np.repeat(pause[None], self.pad, 0), mel,
                               np.repeat(pause[None], self.pad, 0)])
        self.mel = torch.from_numpy((rows - mean) / std).float().to(device)
        self.device = device

    def __call__(self, frames: torch.Tensor) -> torch.Tensor:
        """frames (B,) video frame indices -> (B, K, W, n_mels), as neighbour_windows builds it."""
        k = self.neighbours
        shifts = torch.arange(k, device=self.device) - k // 2
        neighbours = (frames.to(self.device)[:, None] + shifts).clamp(0, self.n_frames - 1)
        # same centres and rounding (half to even) as audio_features.frame_windows
        centres = torch.round((neighbours.double() + 0.5) * MEL_HZ / self.fps).long()
        offsets = torch.arange(self.window, device=self.device) - self.window // 2
        index = (centres[..., None] + offsets + self.pad).clamp(0, len(self.mel) - 1)
        return self.mel[index]
