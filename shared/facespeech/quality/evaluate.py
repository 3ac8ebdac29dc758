"""Held-out evaluation of a trained model, `facespeech eval`: three protocols, three baselines.

Self-driven reconstruction: the held-out frames (the tail of the clip, never trained on) are
rendered from their own audio and tracked poses, over the training frame nearest in pose, and
compared with the real frames. Protocols, always reported apart:

- ``full``: the model's whole crop against the real crop (head, torso and background).
- ``paste_back``: the rendered face pasted onto the real frame with the render path's
  feathered paste mask, scored on the whole crop (SyncTalk's protocol).
- ``head``: only the pixels inside the face mask (ER-NeRF's head-only numbers).

Methods scored the same way on the same frames: ``ours``; ``nearest_pose``, the training frame
nearest in head pose, i.e. the reference our model is given as it is; ``static``, the last
training frame; ``retrieval``, the training frame whose audio window is nearest to the
held-out frame's.

A model that draws over its target (ModelConfig.draws_over_target: the lower face hidden, as
renders use it over the person's own video) is given the held-out frame itself, lower face
greyed, instead of the nearest-pose frame; its paste region is the face and that lower-face
box. Beside it, ``nearest_lower_face`` is the real frame with the nearest-pose frame's lower
face: the same real upper face the model sees, with a real mouth of another moment.
Lip sync: mouth landmarks from one MediaPipe FaceMesh on real and generated sequences alike
(LMD in pixels at 512^2), mouth-opening correlation with the real sequence, and the lag
(frames) at which mouth opening and audio energy correlate best. For a motion-driven model,
``sync_tracked_motion`` scores the renderer driven by the tracked motion codes instead of the
audio regressor's: how much of the lip-sync gap is the renderer's and how much the audio's.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from facespeech.dataset import load_features, read_tracks, split_frames_only
from facespeech.errors import InputError
from facespeech.model import ModelConfig, TalkingHead
from facespeech.model.camera import box_masks
from facespeech.preprocess.pose import (
    CHIN,
    FOREHEAD,
    LIP_POINTS,
    LOWER_INNER_LIP,
    UPPER_INNER_LIP,
)
from facespeech.quality.lpips import LPIPS
from facespeech.quality.metrics import mouth_opening_correlation, psnr, ssim
from facespeech.quality.syncnet import SyncNet, crop_faces, face_crop_boxes, sync_score
from facespeech.train import checkpoints
from facespeech.train.data import (
    ClipTensors,
    PoseNormaliser,
    load_clip,
    model_inputs,
    nearest_pose_rows,
    neighbour_windows,
)
from facespeech.train.distributed import autocast, pick_device

METHODS = ("ours", "nearest_pose", "static", "retrieval")
LOWER_FACE_METHOD = "nearest_lower_face"  # only for models that draw over their target
PROTOCOLS = ("full", "paste_back", "head")
LMD_SIZE = 512  # LMD is reported in pixels of a 512^2 crop, whatever the model's size
MOUTH_LANDMARKS = LIP_POINTS  # the 40 lip-contour points LMD is measured on
MAX_LAG = 5  # frames (200 ms at 25 fps) searched for the audio-video offset
MAX_VOICE_SECONDS = 600.0  # longest voice other_audio_sync decodes (it keeps the first part)


@dataclass
class HeldOut:
    """The held-out frames as uint8 (N, 3, S, S) per method, pasted back onto the real ones."""

    rows: list[int]
    real: torch.Tensor
    pasted: dict[str, torch.Tensor]  # method -> paste-back frames
    ours_full: torch.Tensor  # the model's own whole crops


def load_model(checkpoint: Path, device: torch.device) -> tuple[TalkingHead, dict]:
    state = checkpoints.load(checkpoint)
    model = TalkingHead(ModelConfig(**state["model_config"]))
    model.load_state_dict({k: v.float() for k, v in state["model"].items()})
    return model.to(device).eval(), state


def load_eval_clip(dataset_dir: Path, state: dict, config: ModelConfig) -> ClipTensors:
    data = state["data"]
    track = next((t for t in read_tracks(dataset_dir) if t.person == data["person"]), None)
    if track is None:
        raise InputError(f"dataset {dataset_dir} has no person {data['person']!r}")
    track = split_frames_only(track)
    clip = load_clip(
        dataset_dir, track, config.image_size, data["source_image_size"],
        PoseNormaliser(**data["pose_normaliser"]), (data["audio_mean"], data["audio_std"]),
        load_features(dataset_dir, track.person, track.clip), config.camera_distance,
        config.expression_dim, config.motion_dim, config.motion_shape, config.mask_region,
        config.motion_per_take,
    )
    if not clip.held_out_rows:
        raise InputError(f"dataset {dataset_dir} holds no held-out frames (metadata/split.json)")
    return clip


def retrieval_rows(clip: ClipTensors, rows: list[int]) -> torch.Tensor:
    """For each row, the training row of the same source video whose audio window is nearest
    (L2): what a lookup of the training video by sound alone gives."""
    def features(of: list[int]) -> torch.Tensor:
        frames = torch.tensor([clip.track.poses[r].frame - 1 for r in of])
        return clip.windows[frames].flatten(1)

    train = torch.tensor(clip.train_rows)
    # Exact distances: the matmul shortcut's rounding can rank a near-twin above the frame
    # itself (silent frames differ by little).
    distances = torch.cdist(features(rows), features(clip.train_rows),
                            compute_mode="donot_use_mm_for_euclid_dist")
    # a frame of another joined source video would be a different-looking picture, not a
    # fair lookup of this video
    distances = distances.masked_fill(clip.across_videos(torch.tensor(rows), train),
                                      float("inf"))
    nearest = distances.argmin(dim=1)
    return train[nearest]


def paste_masks(clip: ClipTensors, rows: torch.Tensor, device: torch.device) -> torch.Tensor:
    """The render path's feathered paste mask of each target frame, (B, 1, S, S)."""
    from facespeech.render.config import RenderConfig
    from facespeech.render.render import paste_mask

    size, config = clip.images.shape[-1], RenderConfig()
    face = clip.masks[rows].to(device).float() / 255.0
    hidden = box_masks(clip.hidden[rows].to(device), size)
    return paste_mask(face, hidden, config.feather, config.grow)


def lower_face_masks(clip: ClipTensors, rows: torch.Tensor, device: torch.device
                     ) -> torch.Tensor:
    """The hidden lower-face box of each frame, feathered as the paste mask, (B, 1, S, S)."""
    from facespeech.render.config import RenderConfig
    from facespeech.render.render import paste_mask

    box = box_masks(clip.hidden[rows].to(device), clip.images.shape[-1])
    return paste_mask(box, box, RenderConfig().feather, 0.0)


def methods_of(model: TalkingHead) -> tuple[str, ...]:
    return METHODS + ((LOWER_FACE_METHOD,) if model.config.draws_over_target else ())


def predicted_motion(model: TalkingHead, clip: ClipTensors, rows: list[int],
                     audio_windows: torch.Tensor | None, device: torch.device) -> torch.Tensor:
    """The motion codes of `rows` (the held-out tail: consecutive frames) as a render predicts
    them: the whole sequence at once, smoothed over time; from `audio_windows` (N, W, M) in
    the rows' place if given."""
    if audio_windows is None:
        windows = clip.windows.to(device)
        frames = torch.tensor([clip.track.poses[row].frame - 1 for row in rows], device=device)
    else:
        windows, frames = audio_windows.to(device), torch.arange(len(rows), device=device)
    neighbours = model.config.audio_neighbours
    with torch.inference_mode(), autocast(device):
        return model.motion_sequence(lambda some: neighbour_windows(windows, some, neighbours),
                                     frames).float()


def render_held_out(
    model: TalkingHead, clip: ClipTensors, device: torch.device, batch: int = 8,
    audio_windows: torch.Tensor | None = None, motion: torch.Tensor | None = None,
    perceptual: LPIPS | None = None,
) -> tuple[HeldOut, dict[str, dict[str, dict[str, float]]]]:
    """Render every held-out frame (own audio, or `audio_windows` (N, W, M) in their place;
    driven by `motion` (N, motion_dim), e.g. the tracked codes, in place of the regressors'
    prediction if given) -> the frames, and
    scores[method][protocol][psnr|ssim(|lpips)] averaged over frames; LPIPS (with
    `perceptual`) on the whole frame only, for the full and paste-back protocols."""
    rows = clip.held_out_rows if audio_windows is None else clip.held_out_rows[
        : len(audio_windows)]
    static = clip.train_rows[-1]
    retrieved = retrieval_rows(clip, rows)
    methods = methods_of(model)
    real_all, ours_full = [], []
    pasted: dict[str, list[torch.Tensor]] = {m: [] for m in methods}
    sums: dict[str, dict[str, dict[str, float]]] = {
        m: {p: {"psnr": 0.0, "ssim": 0.0} for p in PROTOCOLS} for m in methods}
    if motion is not None:
        motion = motion.to(device)
    elif model.config.motion_dim:
        motion = predicted_motion(model, clip, rows, audio_windows, device)
    for start in range(0, len(rows), batch):
        chunk = torch.tensor(rows[start : start + batch])
        references = nearest_pose_rows(clip, chunk.tolist(), 1, 0)[:, 0]
        drawn_over = chunk if model.config.draws_over_target else references
        inputs = model_inputs(clip, chunk, drawn_over, model.config.audio_neighbours, device)
        if motion is not None:
            inputs["motion"] = motion[start : start + len(chunk)]
        elif audio_windows is not None:  # an audio-driven model hearing another voice
            index = torch.arange(start, start + len(chunk))
            inputs["audio"] = neighbour_windows(audio_windows, index,
                                                model.config.audio_neighbours).to(device)
        with torch.inference_mode(), autocast(device):
            ours = model(**inputs)["rgb"].float().clamp(0, 1)
        # scored as the 8-bit frames a video would carry
        ours = (ours * 255).round() / 255
        real = clip.images[chunk].to(device).float() / 255.0
        face = clip.masks[chunk].to(device).float() / 255.0
        paste = paste_masks(clip, chunk, device)
        nearest = clip.images[references].to(device).float() / 255.0
        candidates = {
            "ours": ours,
            "nearest_pose": nearest,
            "static": clip.images[[static] * len(chunk)].to(device).float() / 255.0,
            "retrieval": clip.images[retrieved[start : start + batch]].to(device).float() / 255,
        }
        if LOWER_FACE_METHOD in methods:
            candidates[LOWER_FACE_METHOD] = torch.lerp(
                real, nearest, lower_face_masks(clip, chunk, device))
        for method, frames in candidates.items():
            composite = ((paste * frames + (1 - paste) * real) * 255).round() / 255
            pasted[method].append(_to_uint8(composite))
            for protocol, (pred, mask) in {
                "full": (frames, None), "paste_back": (composite, None), "head": (frames, face),
            }.items():
                sums[method][protocol]["psnr"] += psnr(pred, real, mask) * len(chunk)
                sums[method][protocol]["ssim"] += ssim(pred, real, mask) * len(chunk)
                if perceptual is not None and mask is None:
                    with torch.inference_mode():
                        distance = float(perceptual(pred, real).sum())
                    sums[method][protocol]["lpips"] = (
                        sums[method][protocol].get("lpips", 0.0) + distance)
        real_all.append(_to_uint8(real))
        ours_full.append(_to_uint8(ours))
    scores = {m: {p: {k: v / len(rows) for k, v in s.items()} for p, s in by.items()}
              for m, by in sums.items()}
    frames = HeldOut(rows, torch.cat(real_all), {m: torch.cat(v) for m, v in pasted.items()},
                     torch.cat(ours_full))
    return frames, scores


def _to_uint8(images: torch.Tensor) -> torch.Tensor:
    return (images * 255 + 0.5).clamp(0, 255).to(torch.uint8).cpu()


def track_landmarks(frames: torch.Tensor) -> list[np.ndarray | None]:
    """MediaPipe FaceMesh (the preprocessing tracker, video mode) on uint8 (N, 3, S, S) crops:
    per frame (478, 2) in pixels of a LMD_SIZE crop, or None where no face was found."""
    from facespeech.preprocess.tracking import FaceTracker

    size = frames.shape[-1]
    out: list[np.ndarray | None] = []
    with FaceTracker(max_faces=1) as tracker:
        for image in frames.permute(0, 2, 3, 1).numpy():
            faces = tracker.faces(np.ascontiguousarray(image), (size, size))
            out.append(faces[0][:, :2] * (LMD_SIZE / size) if faces else None)
    return out


def mouth_opening(landmarks: list[np.ndarray | None]) -> np.ndarray:
    """Inner-lip gap over forehead-chin height per frame; NaN where untracked."""
    return np.array([
        np.linalg.norm(lm[UPPER_INNER_LIP] - lm[LOWER_INNER_LIP])
        / max(float(np.linalg.norm(lm[FOREHEAD] - lm[CHIN])), 1e-6) if lm is not None else np.nan
        for lm in landmarks
    ])


def audio_energy(
    clip: ClipTensors, rows: list[int], windows: torch.Tensor | None = None
) -> np.ndarray:
    """Loudness per video frame: mean normalised log-mel over the frame's own 40 ms."""
    if windows is None:
        frames = torch.tensor([clip.track.poses[r].frame - 1 for r in rows])
        windows = clip.windows[frames]
    middle = windows.shape[1] // 2
    return windows[: len(rows), middle - 2 : middle + 2].mean(dim=(1, 2)).numpy()


def best_lag(a: np.ndarray, b: np.ndarray, max_lag: int = MAX_LAG) -> tuple[int, float]:
    """Lag (frames, positive: b follows a) maximising the correlation of a[t] and b[t + lag]."""
    best = (0, -2.0)
    for lag in range(-max_lag, max_lag + 1):
        x = a[max(0, -lag) : len(a) - max(0, lag)]
        y = b[max(0, lag) : len(b) - max(0, -lag)]
        keep = np.isfinite(x) & np.isfinite(y)
        if keep.sum() > 2:
            value = mouth_opening_correlation(x[keep], y[keep])
            if value > best[1]:
                best = (lag, value)
    return best


def sync_scores(
    real: list[np.ndarray | None], generated: list[np.ndarray | None], energy: np.ndarray
) -> dict[str, float]:
    """LMD (mean mouth-landmark distance, px at 512^2), mouth-opening correlation with the
    real frames, and the audio-video offset of the generated mouth."""
    both = [i for i, (r, g) in enumerate(zip(real, generated, strict=True))
            if r is not None and g is not None]
    if len(both) < 3:
        return {"tracked_fraction": len(both) / max(len(real), 1)}
    lmd = np.mean([np.linalg.norm(real[i][MOUTH_LANDMARKS] - generated[i][MOUTH_LANDMARKS],
                                  axis=1).mean() for i in both])
    open_real, open_generated = mouth_opening(real), mouth_opening(generated)
    lag, correlation = best_lag(energy, open_generated)
    return {
        "lmd": float(lmd),
        "mouth_open_corr": mouth_opening_correlation(open_real[both], open_generated[both]),
        "av_offset_frames": float(lag),
        "av_corr": correlation,
        "tracked_fraction": len(both) / len(real),
    }


def syncnet_scores(
    model: SyncNet, frames: HeldOut, real_landmarks: list[np.ndarray | None],
    clip: ClipTensors, dataset_dir: Path, fps: float, device: torch.device,
) -> dict[str, dict[str, float]]:
    """SyncNet offset, LSE-D and LSE-C of the real held-out frames and of every method's
    pasted-back frames, each against the held-out audio; faces cropped where the real
    frames' landmarks put them."""
    from facespeech.dataset import SAMPLE_RATE, audio_path
    from facespeech.media import load_audio

    numbers = [clip.track.poses[row].frame for row in frames.rows]
    if numbers != list(range(numbers[0], numbers[0] + len(numbers))):
        raise InputError("the held-out frames are not one run of frames; SyncNet needs one")
    wave = load_audio(audio_path(dataset_dir, clip.track.person, clip.track.clip), SAMPLE_RATE)
    start = round((numbers[0] - 1) / fps * SAMPLE_RATE)
    audio = wave[start : start + round(len(numbers) / fps * SAMPLE_RATE)]
    scale = frames.real.shape[-1] / LMD_SIZE
    boxes = face_crop_boxes([None if lm is None else lm * scale for lm in real_landmarks])
    out = {}
    for name, video in {"real": frames.real, **frames.pasted}.items():
        score = sync_score(model, crop_faces(video, boxes), audio, device=device)
        out[name] = {"offset_frames": float(score.offset_frames), "lse_d": score.distance,
                     "lse_c": score.confidence}
    return out


def evaluate(
    checkpoint: Path, dataset_dir: Path, device: str = "auto", landmarks: bool = True,
    grid: Path | None = None, lpips_weights: tuple[Path, Path] | None = None,
    syncnet_weights: Path | None = None,
) -> dict:
    """The whole held-out evaluation; a JSON-ready dict (see the module docstring).
    lpips_weights: local AlexNet and LPIPS-head files (quality.lpips) to add LPIPS;
    syncnet_weights: a local syncnet_v2.model (quality.syncnet) to add LSE-D/LSE-C."""
    torch_device = pick_device(device)
    model, state = load_model(checkpoint, torch_device)
    clip = load_eval_clip(dataset_dir, state, model.config)
    perceptual = LPIPS.load(*lpips_weights).to(torch_device) if lpips_weights else None
    frames, scores = render_held_out(model, clip, torch_device, perceptual=perceptual)
    result: dict = {"frames": len(frames.rows), "image_size": model.config.image_size,
                    "scores": scores}
    if landmarks:
        real = track_landmarks(frames.real)
        energy = audio_energy(clip, frames.rows)
        lag, correlation = best_lag(energy, mouth_opening(real))
        result["real_av_offset_frames"], result["real_av_corr"] = float(lag), correlation
        result["sync"] = {method: sync_scores(real, track_landmarks(pasted), energy)
                          for method, pasted in frames.pasted.items()}
        if syncnet_weights is not None:
            result["syncnet"] = syncnet_scores(
                SyncNet.load(syncnet_weights), frames, real, clip, dataset_dir,
                state["data"]["fps"], torch_device)
        if model.config.motion_dim:
            forced, _ = render_held_out(model, clip, torch_device,
                                        motion=clip.motion[frames.rows])
            result["sync_tracked_motion"] = sync_scores(
                real, track_landmarks(forced.pasted["ours"]), energy)
    if grid is not None:
        save_grid(frames, clip, grid)
    return result


def save_grid(frames: HeldOut, clip: ClipTensors, path: Path, tile: int = 192) -> None:
    """PNG: rows of held-out frames (first, a third in, the widest-open mouth, two thirds in),
    columns real | ours pasted back | ours full render | nearest pose | static | retrieval
    (| nearest pose's lower face, for a model that draws over its target)."""
    from PIL import Image

    opening = [clip.track.expressions[r].mouth_open for r in frames.rows]
    picks = sorted({0, len(opening) // 3, int(np.argmax(opening)), 2 * len(opening) // 3})
    columns = [frames.real, frames.pasted["ours"], frames.ours_full,
               *(pasted for pasted in list(frames.pasted.values())[1:])]
    sheet = Image.new("RGB", (tile * len(columns), tile * len(picks)))
    for c, column in enumerate(columns):
        for r, index in enumerate(picks):
            image = Image.fromarray(column[index].permute(1, 2, 0).numpy())
            sheet.paste(image.resize((tile, tile), Image.Resampling.LANCZOS), (c * tile, r * tile))
    path.parent.mkdir(parents=True, exist_ok=True)
    sheet.save(path, optimize=True)


def other_audio_sync(
    checkpoint: Path, dataset_dir: Path, audio_files: list[Path], device: str = "auto",
) -> dict[str, dict[str, float]]:
    """Lip sync on new voices: held-out poses driven by each audio file; per file, the best
    correlation of rendered mouth opening with audio energy (and its lag), beside the same for
    the real held-out frames with their own audio."""
    from facespeech.dataset import SAMPLE_RATE
    from facespeech.media import load_audio
    from facespeech.preprocess.audio_features import log_mel, normalise_loudness
    from facespeech.train.data import audio_windows

    torch_device = pick_device(device)
    model, state = load_model(checkpoint, torch_device)
    clip = load_eval_clip(dataset_dir, state, model.config)
    data = state["data"]
    n = len(clip.held_out_rows)
    out: dict[str, dict[str, float]] = {}
    for path in audio_files:
        # the voice's first n frames' worth: as long as the held-out tail it is set over
        wave = load_audio(path, SAMPLE_RATE, max_seconds=MAX_VOICE_SECONDS)
        wave = wave[: round(n / data["fps"] * SAMPLE_RATE)]
        windows = audio_windows(log_mel(normalise_loudness(wave)),
                                min(n, int(len(wave) / SAMPLE_RATE * data["fps"])),
                                data["audio_mean"], data["audio_std"])
        frames, _ = render_held_out(model, clip, torch_device, audio_windows=windows)
        opening = mouth_opening(track_landmarks(frames.pasted["ours"]))
        lag, correlation = best_lag(audio_energy(clip, frames.rows, windows), opening)
        out[path.stem] = {"frames": len(frames.rows), "energy_corr": correlation,
                          "lag_frames": float(lag),
                          "mouth_open_std": float(np.nanstd(opening))}
    return out
