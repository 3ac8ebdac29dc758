"""Model + new audio -> talking-head mp4, in crop space, streamed frame batch by batch.

Compositing: each output frame is a real training crop (the reference, walked forwards and
backwards over the training frames so there is never a jump where the sequence loops) with
the rendered head pasted over its face. The paste mask is the reference frame's face mask,
united with its mouth box, grown a little (an open jaw reaches below the closed-mouth mask)
and blurred (feathered), so inside the face the model decides every pixel and outside it the
real pixels stay untouched, with no visible seam between the two. Pose and blink come from
the same reference frame, so the rendered head lines up with the crop it is pasted on.

Speed: a `Renderer` holds the model, the reference crops and their paste masks on the device
(a render worker keeps it warm between jobs); each batch is one forward pass in bf16, the
composite and the RGB -> yuv420p conversion run on the device, and a writer thread encodes
batch n while the device renders batch n + 1.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from facespeech.dataset import SAMPLE_RATE
from facespeech.errors import InputError
from facespeech.hooks import Progress, ProgressFn, StopFn, Stopped, never_stop, no_progress
from facespeech.model import ModelConfig, TalkingHead
from facespeech.model.camera import box_masks
from facespeech.render import reference as references
from facespeech.render.config import RenderConfig
from facespeech.render.encode import FrameSink, rgb_to_yuv420p, to_rgba8
from facespeech.render.features import MelWindows, silence_mel, speech_mel
from facespeech.train import checkpoints
from facespeech.train.distributed import autocast, pick_device

GREEN = (0.0, 177 / 255, 64 / 255)  # chroma-key green (the broadcast 0/177/64)
BLINK_SECONDS = 0.25
MASK_CHUNK = 32  # reference masks prepared this many at a time (bounded temporary memory)


@dataclass(frozen=True)
class RenderResult:
    frames: int
    duration_s: float  # of the audio; the video holds ceil(duration_s * fps) frames
    fps: int
    seconds_taken: float
    timings: dict[str, float] = field(default_factory=dict)  # seconds per phase


class Renderer:
    """A loaded model with its reference frames on the device, ready to render many audios."""

    def __init__(
        self, model: TalkingHead, data: dict[str, Any], reference: references.ReferenceSet,
        pause: np.ndarray, device: torch.device, compile_model: bool = False,
    ) -> None:
        self.model, self.data, self.device = model, data, device
        self.config: ModelConfig = model.config
        self.reference = reference.to(device)
        self.pause = pause
        self.forward: Callable[..., dict[str, torch.Tensor]] = model
        self.compiled = compile_model and device.type == "cuda"
        if self.compiled:
            # static shapes (the last batch is padded), so one graph serves every batch
            self.forward = torch.compile(model, dynamic=False)
        self._paste_masks: dict[tuple[float, float], torch.Tensor] = {}

    def nbytes(self) -> int:
        """Device memory held: weights, reference crops, paste masks (not the activations)."""
        weights = sum(p.nbytes for p in self.model.parameters())
        return weights + self.reference.nbytes() + sum(
            m.nbytes for m in self._paste_masks.values())

    def render(
        self, audio: Path, out: Path, config: RenderConfig = RenderConfig(),  # noqa: B008
        on_progress: ProgressFn = no_progress, should_stop: StopFn = never_stop,
    ) -> RenderResult:
        """Render `audio` spoken by this person into the mp4 `out`, or the WebM `out` for a
        transparent background (removed on any failure)."""
        from facespeech.media import VideoWriter, load_audio

        started = time.perf_counter()
        timings: dict[str, float] = {}
        wave = load_audio(audio, SAMPLE_RATE, max_seconds=config.max_seconds)
        duration = len(wave) / SAMPLE_RATE
        if not config.min_seconds <= duration <= config.max_seconds:
            raise InputError(f"{audio.name}: audio is {duration:.2f} s long; it must be between "
                             f"{config.min_seconds:g} and {config.max_seconds:g} s")
        timings["decode"] = time.perf_counter() - started
        n_frames = math.ceil(duration * config.fps)
        mel = speech_mel(wave, self.pause)
        windows = MelWindows(mel, self.pause, n_frames, config.fps, self.data["audio_mean"],
                             self.data["audio_std"], self.config.audio_window,
                             self.config.audio_neighbours, self.device)
        timings["features"] = time.perf_counter() - started - timings["decode"]

        batch = config.batch_size or (48 if self.device.type == "cuda" else 8)
        motion = self._motion(windows, n_frames)
        rows = self.reference_walk(n_frames, config)
        blink = self._blinks(n_frames, rows, config)
        masks = self._masks(config)
        size = config.size or self.config.image_size
        render_started = time.perf_counter()
        try:
            with VideoWriter(out, config.fps, size, size, audio=wave, sample_rate=SAMPLE_RATE,
                             crf=config.crf, prefer_gpu_encoder=self.device.type == "cuda",
                             alpha=config.transparent) as writer, torch.inference_mode():
                sink = FrameSink(writer)
                try:
                    for start in range(0, n_frames, batch):
                        if should_stop():
                            raise Stopped(f"render stopped at frame {start} of {n_frames}")
                        count = min(batch, n_frames - start)
                        # the last batch is padded to full size: one shape for compiled graphs
                        frames = torch.arange(start, start + batch, device=self.device)
                        frames = frames.clamp(max=n_frames - 1)
                        composite = self.composite(
                            frames, rows[frames], blink[frames], windows, masks, config,
                            None if motion is None else motion[frames])
                        if config.transparent:
                            sink.put(to_rgba8(composite[:count]))
                        else:
                            sink.put(rgb_to_yuv420p(composite[:count]))
                        done = start + count
                        on_progress(Progress("render", done / n_frames,
                                             f"frame {done}/{n_frames}"))
                    sink.close()
                except BaseException:
                    sink.abort()
                    raise
                timings["encode_thread"] = sink.encode_seconds
        except BaseException:
            out.unlink(missing_ok=True)  # never leave a truncated mp4 that looks like a result
            raise
        timings["render_and_encode"] = time.perf_counter() - render_started
        return RenderResult(n_frames, duration, config.fps, time.perf_counter() - started,
                            timings)

    def composite(
        self, frames: torch.Tensor, rows: torch.Tensor, eye: torch.Tensor, windows: MelWindows,
        masks: torch.Tensor, config: RenderConfig, motion: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """One batch: frame indices, their reference rows and eye codes (and, for a
        motion-driven model, their motion codes) -> (B, 3, S, S) in [0, 1] at the output size,
        the rendered head pasted onto the chosen background; for a transparent one,
        (B, 4, S, S) with the person (and the pasted face) as alpha."""
        ref = self.reference
        reference = ref.images[rows].float() / 255.0
        inputs = {
            "audio": windows(frames), "eye": eye, "rotation": ref.rotation[rows],
            "offset": ref.offset[rows], "focal": ref.focal[rows],
            "expression": ref.expression[rows], "reference_mouth": ref.mouth[rows],
            "motion": motion,
        }
        with autocast(self.device):
            rendered = self.forward(**inputs, reference=reference)["rgb"]
        mask = masks[rows].float() / 255.0
        background = self._background(reference, config)
        composite = torch.lerp(background, rendered.float(), mask)
        if config.transparent:
            person = torch.maximum(ref.person[rows].float() / 255.0, mask)
            composite = torch.cat([composite, person], dim=1)
        size = config.size or self.config.image_size
        if size != composite.shape[-1]:
            composite = F.interpolate(composite, size=(size, size), mode="bilinear",
                                      antialias=True, align_corners=False)
        return composite.clamp(0, 1)

    def _motion(self, windows: MelWindows, n_frames: int) -> torch.Tensor | None:
        """Every frame's motion code, predicted at once so that it can be smoothed over time;
        None for a model driven by the audio code directly."""
        if not self.config.motion_dim:
            return None
        with torch.inference_mode(), autocast(self.device):
            frames = torch.arange(n_frames, device=self.device)
            return self.model.motion_sequence(windows, frames).float()

    def _background(self, reference: torch.Tensor, config: RenderConfig) -> torch.Tensor:
        if config.background in ("reference", "transparent"):  # alpha hides the latter's
            return reference
        if config.background == "green":
            green = torch.tensor(GREEN, device=self.device).view(1, 3, 1, 1)
            return green.expand_as(reference)
        plate = self.reference.images[self._still_row()].float() / 255.0
        return plate.unsqueeze(0).expand_as(reference)

    def _still_row(self) -> int:
        """The reference frame whose head is turned least from the clip's mean orientation."""
        trace = self.reference.rotation.diagonal(dim1=-2, dim2=-1).sum(-1)
        return int(trace.argmax())

    def reference_walk(self, n_frames: int, config: RenderConfig) -> torch.Tensor:
        """(n_frames,) reference row of every output frame, on the device."""
        n = len(self.reference)
        if config.motion == "still" or n == 1:
            return torch.full((n_frames,), self._still_row(), device=self.device)
        # the reference moves at its own frame rate whatever the output fps
        position = torch.arange(n_frames, device=self.device) * self.data["fps"] // config.fps
        return ping_pong(position, n)

    def _blinks(self, n_frames: int, rows: torch.Tensor, config: RenderConfig) -> torch.Tensor:
        """(n_frames, 1) eye codes: the reference's own, or blinks at config.blink_rate."""
        if config.blink_rate is None:
            return self.reference.blink[rows]
        blink = self.reference.blink.flatten()
        opened, closed = float(blink.quantile(0.1)), float(blink.max())
        times = (np.arange(n_frames) + 0.5) / config.fps
        eye = np.full(n_frames, opened, np.float32)
        if config.blink_rate > 0:
            interval = 60.0 / config.blink_rate
            rng = np.random.default_rng(0)  # the same video for the same request
            starts = np.arange(0.5 * interval, times[-1] + interval, interval)
            starts = starts + rng.uniform(-0.3, 0.3, len(starts)) * interval
            for start in starts:
                inside = (times >= start) & (times < start + BLINK_SECONDS)
                phase = (times[inside] - start) / BLINK_SECONDS
                eye[inside] = opened + (closed - opened) * np.sin(np.pi * phase)
        return torch.from_numpy(eye).to(self.device).unsqueeze(1)

    def _masks(self, config: RenderConfig) -> torch.Tensor:
        """(N, 1, S, S) uint8 paste masks of the reference rows, made once per feather/grow."""
        key = (config.feather, config.grow)
        if key not in self._paste_masks:
            size = self.config.image_size
            chunks = []
            for start in range(0, len(self.reference), MASK_CHUNK):
                part = slice(start, start + MASK_CHUNK)
                face = self.reference.masks[part].float() / 255.0
                mouth = box_masks(self.reference.mouth[part], size)
                mask = paste_mask(face, mouth, config.feather, config.grow)
                chunks.append((mask * 255.0 + 0.5).to(torch.uint8))
            self._paste_masks[key] = torch.cat(chunks)
        return self._paste_masks[key]


def load(
    checkpoint: Path, dataset_dir: Path | None = None, device: str = "auto",
    compile_model: bool = False,
) -> Renderer:
    """Load a model file for rendering. Its reference frames come from the file itself (see
    reference.embed) or, for a file without them, from the dataset it was trained on."""
    target = pick_device(device)
    state = checkpoints.load(checkpoint)
    model_config = ModelConfig(**state["model_config"])
    model = TalkingHead(model_config)
    model.load_state_dict(state["model"])
    model = model.to(target).eval().requires_grad_(False)
    if target.type == "cuda":
        # cuDNN's bf16 convolutions are fastest in NHWC; the upsampler is most of the conv work
        model.upsampler.to(memory_format=torch.channels_last)
    reference = references.from_checkpoint(state)
    pause = state.get(references.CHECKPOINT_KEY, {}).get("pause_mel")
    if reference is None:
        if dataset_dir is None:
            raise InputError(f"{checkpoint.name} holds no reference frames; give the dataset "
                             "it was trained on")
        reference = references.from_dataset(dataset_dir, state["data"], model_config)
        pause = silence_mel(references.training_mel(dataset_dir, state["data"]["person"]))
    if pause is None:
        pause = silence_mel(None)
    # librosa's first mel (filter bank, numba) takes seconds: spend them here, not in a render
    speech_mel(np.random.default_rng(0).normal(0, 0.1, SAMPLE_RATE).astype(np.float32),
               np.asarray(pause, np.float32))
    return Renderer(model, state["data"], reference, np.asarray(pause, np.float32), target,
                    compile_model)


def run(
    checkpoint: Path,
    dataset_dir: Path | None,
    audio: Path,
    out: Path,
    config: RenderConfig = RenderConfig(),  # noqa: B008 - frozen, so a shared default is safe
    on_progress: ProgressFn = no_progress,
    should_stop: StopFn = never_stop,
) -> RenderResult:
    """Render `audio` spoken by the person of `checkpoint` into the mp4 `out`.

    Raises InputError for audio that cannot be decoded, is silent or is outside the length
    limits, and hooks.Stopped (removing the partial mp4) when should_stop() says yes between
    batches. `dataset_dir` is needed only for a model file without embedded reference frames.
    """
    renderer = load(checkpoint, dataset_dir, config.device, config.compile)
    return renderer.render(audio, out, config, on_progress, should_stop)


def ping_pong(position: torch.Tensor, length: int) -> torch.Tensor:
    """0, 1, .., n-1, n-2, .., 1, 0, 1, ..: walk the reference frames without a jump."""
    if length == 1:
        return torch.zeros_like(position)
    period = 2 * (length - 1)
    phase = position % period
    return torch.where(phase < length, phase, period - phase)


def paste_mask(face: torch.Tensor, mouth: torch.Tensor, feather: float, grow: float
               ) -> torch.Tensor:
    """(B, 1, S, S) soft mask: face or mouth, grown by max-pooling, then Gaussian-feathered."""
    size = face.shape[-1]
    mask = torch.maximum(face, mouth)
    grow_px = int(round(grow * size))
    if grow_px:
        mask = F.max_pool2d(mask, 2 * grow_px + 1, stride=1, padding=grow_px)
    sigma = feather * size / 2
    if sigma < 0.5:
        return mask
    radius = int(math.ceil(3 * sigma))
    x = torch.arange(-radius, radius + 1, device=mask.device, dtype=mask.dtype)
    kernel = torch.exp(-(x**2) / (2 * sigma**2))
    kernel = kernel / kernel.sum()
    mask = F.pad(mask, (radius,) * 4, mode="replicate")
    mask = F.conv2d(mask, kernel.view(1, 1, 1, -1))
    return F.conv2d(mask, kernel.view(1, 1, -1, 1))
