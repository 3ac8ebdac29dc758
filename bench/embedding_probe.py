"""Would a pretrained speech encoder predict the mouth better than our log-mel? A linear probe.

    python -m bench.embedding_probe DATASET --models DIR [--voices a.wav,b.wav]

DIR holds Google's speech_embedding as ONNX, `melspectrogram.onnx` and `embedding_model.onnx`
(openwakeword 0.5.1's wheel ships both under openwakeword/resources/models; they cannot be
downloaded at run time here). Ridge regression, deterministic, so no seed spread: the motion
code from (a) the regressor's own input, the log-mel windows of the K frames around each frame,
(b) the embeddings of the 5 frames around it (96 each, one 0.76 s window centred per frame),
(c) both. Fitted on the regressor's fit rows (train.motion._split), the ridge strength picked
on its validation rows, scored on the held-out tail after the σ = 2 smoothing `fast` uses:
mouth-opening correlation, the shape components' error, and on new voices the agreement of
the predicted opening with the voice's energy (as bench.motion_fit scores the regressor).
Needs onnxruntime besides the project's dependencies.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
import typer
from scipy.ndimage import gaussian_filter1d
from sklearn.linear_model import Ridge

from bench.motion_fit import per_bin, untrained, voice_windows
from facespeech.dataset import SAMPLE_RATE, audio_path
from facespeech.media import load_audio
from facespeech.quality.evaluate import audio_energy, best_lag
from facespeech.quality.metrics import mouth_opening_correlation
from facespeech.train import TrainConfig
from facespeech.train.data import ClipTensors, neighbour_windows
from facespeech.train.motion import _split

EMBEDDING_WINDOW = 76  # mel rows (10 ms each) the embedding model reads
EMBEDDING_NEIGHBOURS = 5  # video frames of embeddings around each frame
ALPHAS = (1e1, 1e2, 1e3, 1e4, 1e5)
SMOOTHING = 2.0  # frames, as fast's motion_smoothing

Embedder = Callable[[np.ndarray, int], np.ndarray]  # (wave, video frames) -> (frames, D)


def onnx_embedder(models: Path, fps: int = 25) -> Embedder:
    """speech_embedding through onnxruntime: one embedding per video frame, its window
    centred on the frame (openwakeword steps 80 ms and looks back; a probe can look both ways)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    mel_model = ort.InferenceSession(str(models / "melspectrogram.onnx"), options)
    embedding_model = ort.InferenceSession(str(models / "embedding_model.onnx"), options)

    def embed(wave: np.ndarray, frames: int) -> np.ndarray:
        pcm = (np.clip(wave, -1, 1) * 32767).astype(np.int16).astype(np.float32)[None]
        spec = np.squeeze(mel_model.run(None, {mel_model.get_inputs()[0].name: pcm})[0])
        spec = spec / 10 + 2  # openwakeword's match to the TensorFlow original
        pad = np.full((EMBEDDING_WINDOW, spec.shape[1]), spec.min(), dtype=spec.dtype)
        spec = np.concatenate([pad, spec, pad])
        centres = np.round(((np.arange(frames) + 0.5) / fps - 0.0125) / 0.01).astype(int)
        starts = centres + EMBEDDING_WINDOW - EMBEDDING_WINDOW // 2
        batch = np.stack([spec[s:s + EMBEDDING_WINDOW] for s in starts])[..., None]
        return np.concatenate([
            embedding_model.run(None, {"input_1": batch[i:i + 256].astype(np.float32)})[0]
            .reshape(-1, 96) for i in range(0, len(batch), 256)])

    return embed


def features(kind: str, windows: torch.Tensor, embeddings: np.ndarray | None,
             frames: np.ndarray, neighbours: int) -> np.ndarray:
    """(len(frames), D): 'mel', 'emb' or 'mel+emb' around each (0-based) video frame."""
    parts = []
    if "mel" in kind:
        parts.append(neighbour_windows(windows, torch.tensor(frames), neighbours)
                     .reshape(len(frames), -1).numpy())
    if "emb" in kind and embeddings is not None:
        shifts = np.arange(EMBEDDING_NEIGHBOURS) - EMBEDDING_NEIGHBOURS // 2
        index = np.clip(frames[:, None] + shifts, 0, len(embeddings) - 1)
        parts.append(embeddings[index].reshape(len(frames), -1))
    return np.concatenate(parts, axis=1)


def _best_ridge(x_fit: np.ndarray, y_fit: np.ndarray, x_val: np.ndarray, y_val: np.ndarray,
                score: Callable[[np.ndarray, np.ndarray], float]) -> tuple[float, Ridge]:
    fits = [(a, Ridge(alpha=a).fit(x_fit, y_fit)) for a in ALPHAS]
    return max(fits, key=lambda fit: score(fit[1].predict(x_val), y_val))


def probe(kind: str, clip: ClipTensors, embeddings: np.ndarray | None, neighbours: int,
          voices: list[tuple[str, torch.Tensor, np.ndarray | None]]) -> dict[str, object]:
    """Opening and shape ridges of one feature kind, scored on the held-out tail and voices."""
    fit, val = _split(clip)
    held = sorted(clip.held_out_rows, key=lambda row: clip.track.poses[row].frame)
    frame_of = np.array([pose.frame - 1 for pose in clip.track.poses])
    codes = clip.motion.numpy()
    x = {name: features(kind, clip.windows, embeddings, frame_of[rows], neighbours)
         for name, rows in (("fit", fit), ("val", val), ("held", held))}
    mean, std = x["fit"].mean(0), x["fit"].std(0) + 1e-3
    x = {name: (value - mean) / std for name, value in x.items()}
    opening_alpha, opening = _best_ridge(
        x["fit"], codes[fit, 0], x["val"], codes[val, 0], mouth_opening_correlation)
    shape_alpha, shape = _best_ridge(
        x["fit"], codes[fit, 1:], x["val"], codes[val, 1:],
        lambda p, y: -float(((p - y) ** 2).mean()))

    def smoothed(values: np.ndarray) -> np.ndarray:
        return gaussian_filter1d(values, SMOOTHING, axis=0, mode="nearest")

    predicted_shape = smoothed(shape.predict(x["held"]))
    result: dict[str, object] = {
        "opening_alpha": opening_alpha, "shape_alpha": shape_alpha,
        "held_out_opening_corr": round(mouth_opening_correlation(
            smoothed(opening.predict(x["held"])), codes[held, 0]), 3),
        "held_out_shape_mse": round(float(((predicted_shape - codes[held, 1:]) ** 2).mean()), 3),
    }
    for name, windows, voice_embeddings in voices:
        frames = np.arange(len(windows))
        voice_x = (features(kind, windows, voice_embeddings, frames, neighbours) - mean) / std
        energy = audio_energy(clip, frames.tolist(), windows)
        result[name] = round(best_lag(energy, smoothed(opening.predict(voice_x)))[1], 3)
    return result


def main(dataset: Path, models: Path | None = None, voices: str = "",
         voice_seconds: float = 20.0, norm: str = "global") -> None:
    """`--norm bins` normalises each recording's log-mel per mel bin (bench.motion_fit's)."""
    config = TrainConfig.from_preset("fast", {"motion_shape": "expression"})
    model, clip, stats = untrained(dataset, config, {})
    if norm == "bins":
        clip.windows = per_bin(clip.windows)
    embed = onnx_embedder(models) if models is not None else None
    embeddings = None
    if embed is not None:
        wave = load_audio(audio_path(dataset, clip.track.person, clip.track.clip), SAMPLE_RATE)
        embeddings = embed(wave, len(clip.windows))
    voice_inputs = []
    for path in [Path(v) for v in voices.split(",") if v]:
        windows = voice_windows(path, voice_seconds, 25, stats, norm)
        wave = load_audio(path, SAMPLE_RATE)[: round(voice_seconds * SAMPLE_RATE)]
        voice_inputs.append((path.stem, windows,
                             embed(wave, len(windows)) if embed is not None else None))
    kinds = ("mel", "emb", "mel+emb") if embed is not None else ("mel",)
    result = {kind: probe(kind, clip, embeddings, model.config.audio_neighbours, voice_inputs)
              for kind in kinds}
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    typer.run(main)
