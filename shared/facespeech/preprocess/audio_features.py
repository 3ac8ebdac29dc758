"""Log-mel features and their per-video-frame windows (shared by preprocess and render)."""

from __future__ import annotations

import numpy as np

from facespeech.dataset import MEL_HZ, N_MELS, SAMPLE_RATE

# Mel power below this counts as silence; log(MEL_FLOOR) is the value of silence everywhere,
# including the padding before the first and after the last mel frame.
MEL_FLOOR = 1e-5
SILENCE = float(np.log(MEL_FLOOR))
WINDOW_SECONDS = 0.025  # 400 samples at 16 kHz, the usual speech analysis window
# Loudness target of speech frames (dBFS RMS over the louder half of 25 ms frames).
TARGET_SPEECH_DBFS = -20.0
PEAK_LIMIT = 0.99


def log_mel(wave: np.ndarray, sample_rate: int = SAMPLE_RATE) -> np.ndarray:
    """(T, 80) float32 log-mel at MEL_HZ frames per second; frame t is centred at t / MEL_HZ.

    At 16 kHz: n_fft = win = 400, hop = 160 (the Wav2Lip/ER-NeRF front end).
    """
    import librosa  # here, not at the top: training imports this module but needs no librosa

    hop = sample_rate // MEL_HZ
    window = round(WINDOW_SECONDS * sample_rate)
    mel = librosa.feature.melspectrogram(
        y=np.asarray(wave, dtype=np.float32), sr=sample_rate, n_fft=window, hop_length=hop,
        win_length=window, n_mels=N_MELS, center=True, power=2.0,
    )
    return np.log(np.maximum(mel, MEL_FLOOR)).T.astype(np.float32)


def frame_windows(mel: np.ndarray, n_frames: int, fps: int = 25, window: int = 16) -> np.ndarray:
    """(n_frames, window, 80): for each video frame, the mel frames around its centre time.

    Video frame i spans [i / fps, (i + 1) / fps); its window holds `window` mel frames
    centred on (i + 0.5) / fps. Outside the audio the window holds SILENCE, so the first and
    last frames see silence exactly as the model sees it in pauses.
    """
    n_mels = mel.shape[1]
    if n_frames == 0:
        return np.zeros((0, window, n_mels), np.float32)
    centres = np.round((np.arange(n_frames) + 0.5) * MEL_HZ / fps).astype(np.int64)
    indices = centres[:, None] + (np.arange(window) - window // 2)[None, :]
    before = max(0, -int(indices.min()))
    after = max(0, int(indices.max()) + 1 - len(mel))
    padded = np.concatenate([
        np.full((before, n_mels), SILENCE, np.float32),
        mel.astype(np.float32),
        np.full((after, n_mels), SILENCE, np.float32),
    ])
    return padded[indices + before]


def speech_rms(wave: np.ndarray, sample_rate: int = SAMPLE_RATE) -> float:
    """RMS of the louder half of 25 ms frames: speech level, not diluted by pauses."""
    frame = round(WINDOW_SECONDS * sample_rate)
    usable = len(wave) // frame * frame
    if usable == 0:
        return float(np.sqrt(np.mean(np.square(wave)))) if len(wave) else 0.0
    energies = np.mean(np.square(wave[:usable].reshape(-1, frame)), axis=1)
    loud = energies[energies >= np.median(energies)]
    return float(np.sqrt(loud.mean()))


def normalise_loudness(wave: np.ndarray, sample_rate: int = SAMPLE_RATE) -> np.ndarray:
    """Scale speech to TARGET_SPEECH_DBFS, never past PEAK_LIMIT (quiet and loud uploads alike)."""
    level = speech_rms(wave, sample_rate)
    if level <= 0:
        return wave.astype(np.float32)
    gain = 10 ** (TARGET_SPEECH_DBFS / 20) / level
    peak = float(np.abs(wave).max())
    gain = min(gain, PEAK_LIMIT / peak) if peak > 0 else gain
    return (wave * gain).astype(np.float32)
