"""A talking-head sample made from nothing external: a shipped photo, animated to speech.

The photo is scikit-image's astronaut (Eileen Collins, NASA, public domain). The speech is
espeak-ng where it is installed, otherwise a synthesised speech-like signal: voiced formant
syllables with a pitch contour and pauses. The mouth opens with the audio envelope, the eyes
blink now and then and the head sways a little, so preprocessing and training see a face
whose mouth follows its audio, as in a real talking video.
"""

from __future__ import annotations

import math
import shutil
import subprocess
import tempfile
from pathlib import Path

import cv2
import mediapipe as mp
import numpy as np
import soundfile as sf
from scipy.signal import lfilter
from skimage import data

from facespeech.dataset import FPS, SAMPLE_RATE
from facespeech.errors import InputError
from facespeech.media import VideoWriter, load_audio

SIZE = 512
SENTENCES = [
    "The quick brown fox jumps over the lazy dog.",
    "We choose to go to the moon, not because it is easy, but because it is hard.",
    "Every morning the station crew checks the air, the water and the power.",
    "Speech drives the face, and the face follows the sound of the words.",
]
# Formants (Hz) of five vowels (Peterson & Barney averages): the "syllables" of the signal.
VOWEL_FORMANTS = [(730, 1090, 2440), (270, 2290, 3010), (300, 870, 2240),
                  (530, 1840, 2480), (570, 840, 2410)]
UPPER_INNER_LIP, LOWER_INNER_LIP, MOUTH_LEFT, MOUTH_RIGHT, CHIN = 13, 14, 61, 291, 152
RIGHT_EYE = (33, 133, 159, 145)  # corners, upper lid, lower lid
LEFT_EYE = (263, 362, 386, 374)
INNER_MOUTH_RGB = (70, 25, 30)


def make_sample(out_dir: Path, seconds: float = 12.0) -> tuple[Path, Path]:
    """Write video.mp4 (512x512, 25 fps, speech muxed) and speech.wav (other speech, for
    rendering) into out_dir and return their paths."""
    out_dir.mkdir(parents=True, exist_ok=True)
    speech = make_speech(out_dir / "sample_speech.wav", seconds, seed=0)
    wave = load_audio(speech, SAMPLE_RATE)
    video = out_dir / "video.mp4"
    animate_photo(video, wave)
    speech.unlink()
    render_speech = make_speech(out_dir / "speech.wav", max(4.0, seconds / 2), seed=1)
    return video, render_speech


def make_speech(path: Path, seconds: float, seed: int = 0) -> Path:
    """A 16 kHz mono wav of `seconds` of speech (espeak-ng) or speech-like sound."""
    wave = _espeak(seconds, seed) if shutil.which("espeak-ng") else None
    if wave is None:
        wave = synth_speech(seconds, seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(path, wave, SAMPLE_RATE, subtype="PCM_16")
    return path


def _espeak(seconds: float, seed: int) -> np.ndarray | None:
    order = np.random.default_rng(seed).permutation(len(SENTENCES))
    text = " ".join(SENTENCES[i] for i in order)
    with tempfile.TemporaryDirectory() as tmp:
        wav = Path(tmp) / "speech.wav"
        done = subprocess.run(["espeak-ng", "-s", "150", "-w", str(wav), text],
                              capture_output=True, check=False)
        if done.returncode != 0 or not wav.is_file():
            return None
        wave = load_audio(wav, SAMPLE_RATE)
    return _fit_length(wave, seconds)


def _fit_length(wave: np.ndarray, seconds: float) -> np.ndarray:
    n = round(seconds * SAMPLE_RATE)
    repeats = math.ceil(n / max(len(wave), 1))
    return np.tile(wave, repeats)[:n].astype(np.float32)


def synth_speech(seconds: float, seed: int = 0) -> np.ndarray:
    """Phrases of 3-8 syllables, each a glottal pulse train through vowel formant filters,
    with a falling pitch contour per phrase and pauses between words and phrases."""
    rng = np.random.default_rng(seed)
    n_total = round(seconds * SAMPLE_RATE)
    out = np.zeros(n_total, np.float32)
    cursor = round(0.3 * SAMPLE_RATE)
    while cursor < n_total:
        syllables = int(rng.integers(3, 9))
        base_pitch = rng.uniform(110, 170)
        for k in range(syllables):
            if cursor >= n_total:
                break
            duration = rng.uniform(0.12, 0.28)
            pitch = base_pitch * (1.15 - 0.3 * k / syllables)  # declination over the phrase
            syllable = _syllable(duration, pitch, VOWEL_FORMANTS[rng.integers(5)], rng)
            end = min(cursor + len(syllable), n_total)
            out[cursor:end] += syllable[: end - cursor]
            cursor = end + round(rng.uniform(0.02, 0.09) * SAMPLE_RATE)
        cursor += round(rng.uniform(0.35, 0.7) * SAMPLE_RATE)
    return (0.6 * out / max(float(np.abs(out).max()), 1e-6)).astype(np.float32)


def _syllable(duration: float, pitch: float, formants: tuple[int, int, int],
              rng: np.random.Generator) -> np.ndarray:
    n = round(duration * SAMPLE_RATE)
    t = np.arange(n) / SAMPLE_RATE
    vibrato = 1 + 0.02 * np.sin(2 * np.pi * 5 * t)
    phase = np.cumsum(pitch * vibrato / SAMPLE_RATE)
    source = (np.diff(np.floor(phase), prepend=0) > 0).astype(np.float64)  # pulse train
    voiced = source
    for frequency, bandwidth in zip(formants, (80, 100, 120), strict=True):
        voiced = _resonate(voiced, frequency, bandwidth)
    onset = rng.normal(0, 1, n) * np.exp(-t / 0.02) * 0.3  # a consonant-like burst
    envelope = np.sin(np.pi * np.clip(t / duration, 0, 1)) ** 0.7
    signal = voiced / max(np.abs(voiced).max(), 1e-9) + onset
    return (signal * envelope).astype(np.float32)


def _resonate(signal: np.ndarray, frequency: float, bandwidth: float) -> np.ndarray:
    """Two-pole resonator (Klatt 1980) at `frequency` Hz."""
    r = math.exp(-math.pi * bandwidth / SAMPLE_RATE)
    theta = 2 * math.pi * frequency / SAMPLE_RATE
    return lfilter([1 - r], [1, -2 * r * math.cos(theta), r * r], signal)


def mouth_envelope(wave: np.ndarray, n_frames: int) -> np.ndarray:
    """0..1 per video frame: RMS over the frame's span, scaled by the loud (95th) level."""
    per_frame = SAMPLE_RATE // FPS
    padded = np.zeros(n_frames * per_frame, np.float32)
    padded[: min(len(wave), len(padded))] = wave[: len(padded)]
    rms = np.sqrt(np.mean(np.square(padded.reshape(n_frames, per_frame)), axis=1))
    return np.clip(rms / max(float(np.percentile(rms, 95)), 1e-6), 0, 1)


def animate_photo(path: Path, wave: np.ndarray) -> None:
    photo = cv2.resize(data.astronaut(), (SIZE, SIZE))
    landmarks = _photo_landmarks(photo)
    n_frames = math.ceil(len(wave) / SAMPLE_RATE * FPS)
    openings = mouth_envelope(wave, n_frames)
    rng = np.random.default_rng(0)
    blink_starts = set(np.cumsum(rng.integers(60, 110, size=n_frames // 60 + 1)).tolist())
    with VideoWriter(path, FPS, SIZE, SIZE, audio=wave, sample_rate=SAMPLE_RATE) as writer:
        blink_left = 0
        for index in range(n_frames):
            blink_left = 5 if index in blink_starts else max(blink_left - 1, 0)
            closure = (0.0, 0.5, 1.0, 1.0, 0.5, 0.0)[blink_left]
            frame = _open_mouth(photo, landmarks, float(openings[index]))
            frame = _close_eyes(frame, landmarks, closure)
            writer.write(_sway(frame, index))


def _photo_landmarks(photo: np.ndarray) -> np.ndarray:
    with mp.solutions.face_mesh.FaceMesh(static_image_mode=True, refine_landmarks=True) as mesh:
        result = mesh.process(photo)
    if not result.multi_face_landmarks:
        raise InputError("no face found in the sample photo")
    return np.array([(p.x * SIZE, p.y * SIZE) for p in result.multi_face_landmarks[0].landmark])


def _open_mouth(photo: np.ndarray, landmarks: np.ndarray, opening: float) -> np.ndarray:
    """Drop the jaw by `opening` (0..1) of half the mouth width and fill the gap dark.

    Right at the lips the drop follows a lens (full at the centre, none at the corners), so
    the gap is lip-shaped; further down it widens to the whole jaw, which moves as one
    piece; below the chin it fades out so the neck stays put.
    """
    mouth_x, mouth_y = (landmarks[UPPER_INNER_LIP] + landmarks[LOWER_INNER_LIP]) / 2
    width = float(np.linalg.norm(landmarks[MOUTH_RIGHT] - landmarks[MOUTH_LEFT]))
    chin_y = float(landmarks[CHIN][1])
    open_px = opening * 0.45 * width
    if open_px < 0.5:
        return photo.copy()
    ys, xs = np.mgrid[0:SIZE, 0:SIZE].astype(np.float32)
    lens = np.sqrt(np.clip(1 - ((xs - mouth_x) / (0.45 * width)) ** 2, 0, 1))
    jaw = np.clip(1 - ((xs - mouth_x) / (1.4 * width)) ** 2, 0, 1) ** 2
    towards_jaw = np.clip((ys - mouth_y) / (0.5 * (chin_y - mouth_y)), 0, 1)
    below_chin = np.clip(1 - (ys - chin_y) / (0.6 * (chin_y - mouth_y)), 0, 1)
    profile = (1 - towards_jaw) * lens + towards_jaw * jaw
    weight = np.where(ys < mouth_y, 0.0, below_chin * profile)
    frame = cv2.remap(photo, xs, ys - open_px * weight.astype(np.float32), cv2.INTER_LINEAR,
                      borderMode=cv2.BORDER_REFLECT)
    cavity = (ys >= mouth_y) & (ys < mouth_y + open_px * lens)
    soft = cv2.GaussianBlur(cavity.astype(np.float32), (5, 5), 0)[..., None]
    return (frame * (1 - soft) + np.array(INNER_MOUTH_RGB) * soft).astype(np.uint8)


def _close_eyes(frame: np.ndarray, landmarks: np.ndarray, closure: float) -> np.ndarray:
    """Cover the top `closure` of each eye with the skin just above it (the eyelid)."""
    if closure <= 0:
        return frame
    out = frame.copy()
    for outer, inner, upper, lower in (RIGHT_EYE, LEFT_EYE):
        x0, x1 = sorted((int(landmarks[outer][0]), int(landmarks[inner][0])))
        top, bottom = int(landmarks[upper][1]) - 2, int(landmarks[lower][1]) + 2
        height = bottom - top
        covered = max(1, round(closure * height))
        lid = frame[top - height : top - height + covered, x0 - 2 : x1 + 3]
        out[top : top + covered, x0 - 2 : x1 + 3] = cv2.GaussianBlur(lid, (5, 5), 0)
    return out


def _sway(frame: np.ndarray, index: int) -> np.ndarray:
    """Slow, small head motion: a few tenths of a degree to ~2 degrees and a few pixels."""
    t = index / FPS
    angle = 1.5 * math.sin(2 * math.pi * 0.23 * t) + 0.5 * math.sin(2 * math.pi * 0.61 * t)
    dx = 4 * math.sin(2 * math.pi * 0.17 * t)
    dy = 2 * math.sin(2 * math.pi * 0.29 * t + 1)
    affine = cv2.getRotationMatrix2D((SIZE / 2, SIZE * 0.45), angle, 1.0)
    affine[:, 2] += (dx, dy)
    return cv2.warpAffine(frame, affine, (SIZE, SIZE), borderMode=cv2.BORDER_REFLECT)
