"""The training loop, read top to bottom: set-up, data, networks, optimiser, loop, evaluation."""

from __future__ import annotations

import contextlib
import copy
import json
import math
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch.nn.parallel import DistributedDataParallel
from torch.optim.swa_utils import AveragedModel

from facespeech.dataset import load_features, read_info, read_tracks, split_frames_only
from facespeech.errors import InputError
from facespeech.hooks import Progress, ProgressFn, StopFn, Stopped, never_stop, no_progress
from facespeech.model import ModelConfig, TalkingHead
from facespeech.model.camera import box_masks
from facespeech.quality.metrics import compute_metrics, ssim_map
from facespeech.train import checkpoints, distributed
from facespeech.train.config import MODE_FIELDS, SHAPE_FIELDS, TrainConfig
from facespeech.train.data import (
    ClipTensors,
    PoseNormaliser,
    audio_statistics,
    draw_rows,
    expression_dim_of,
    lip_dim_of,
    load_clip,
    model_inputs,
    nearest_pose_rows,
)
from facespeech.train.motion import fit_motion

Resume = bool | Literal["auto"] | Path


@dataclass(frozen=True)
class TrainResult:
    checkpoint: Path  # run_dir/model.pt: weights, config and what rendering needs
    step: int
    metrics: dict[str, float]  # held-out quality of the final model and of the baseline


def run(
    dataset_dir: Path,
    run_dir: Path,
    config: TrainConfig,
    on_progress: ProgressFn = no_progress,
    should_stop: StopFn = never_stop,
    on_checkpoint: Callable[[Path], None] | None = None,
    resume: Resume = "auto",
) -> TrainResult:
    """Train a talking head on one person of a dataset; see TrainConfig for the knobs.

    Raises hooks.Stopped (after writing a checkpoint) when should_stop() says yes, InputError
    for an unusable dataset, and RuntimeError when the loss stays non-finite after
    config.max_rollbacks rollbacks.
    """
    # --- set-up ---------------------------------------------------------------------------
    world = distributed.setup(config.device)
    device = world.device
    run_dir.mkdir(parents=True, exist_ok=True)
    resume_from = _resume_path(run_dir, resume)
    state = checkpoints.load(resume_from) if resume_from else None
    on_progress(Progress("load", 0.0, "loading frames"))
    info = read_info(dataset_dir)
    track = _pick_track(dataset_dir, config.person)
    if state is None:
        config = config.for_video(len(track.train_frames) / info.fps)
    else:  # shape-defining fields and the run's mode come from the checkpoint (nanoGPT)
        # a field newer than the checkpoint takes its default: what the old code did
        kept = {name: state["config"].get(name, TrainConfig.model_fields[name].default)
                for name in SHAPE_FIELDS + MODE_FIELDS}
        config = TrainConfig.model_validate({**config.model_dump(), **kept})
    if world.is_main:
        (run_dir / "config.json").write_text(config.model_dump_json(indent=2))
    log = MetricsLog(run_dir, world.is_main, config)
    torch.manual_seed(config.seed)

    # --- data -----------------------------------------------------------------------------
    mel = load_features(dataset_dir, track.person, track.clip)
    if state is not None:
        normaliser = PoseNormaliser(**state["data"]["pose_normaliser"])
        audio_stats = (state["data"]["audio_mean"], state["data"]["audio_std"])
        model_config = ModelConfig(**state["model_config"])
    else:
        normaliser = PoseNormaliser.fit(track.poses)
        audio_stats = audio_statistics(mel)
        model_config = config.to_model_config(expression_dim_of(track), lip_dim_of(track),
                                              len(track.segment_starts))
    # the pose and code statistics above are the whole track's; frames outside the split
    # (a view of part of a joined dataset) are not loaded
    clip = load_clip(
        dataset_dir, split_frames_only(track), config.image_size, info.image_size, normaliser,
        audio_stats, mel, model_config.camera_distance, model_config.expression_dim,
        model_config.motion_dim, model_config.motion_shape, model_config.mask_region,
        model_config.motion_per_take,
    )
    if device.type == "cuda":  # each step's frames are then gathered there, not copied over
        clip = replace(clip, images=clip.images.to(device), masks=clip.masks.to(device))
    data_info = {
        "person": track.person, "clip": track.clip, "fps": info.fps,
        "source_image_size": info.image_size, "pose_normaliser": asdict(normaliser),
        "audio_mean": audio_stats[0], "audio_std": audio_stats[1],
        "reference_frame": clip.track.poses[clip.train_rows[-1]].frame,
    }
    reference_pool = None  # (train rows, candidates): near-pose references per training row
    if config.reference_frames == "self":
        reference_pool = torch.tensor(clip.train_rows)[:, None]
    elif config.reference_frames == "near_pose":
        reference_pool = nearest_pose_rows(clip, clip.train_rows, config.reference_candidates,
                                           config.reference_min_gap)

    take_weights = clip.take_weights(clip.train_rows, config.main_take_share)

    # --- networks and optimiser -----------------------------------------------------------
    model = TalkingHead(model_config).to(device)
    if device.type == "cuda":
        model.upsampler.to(memory_format=torch.channels_last)
    planes = [model.field.planes]
    others = [p for name, p in model.named_parameters() if name != "field.planes"]
    optimizer = torch.optim.Adam(
        [{"params": planes, "lr": config.plane_lr}, {"params": others, "lr": config.lr}],
        betas=(0.9, 0.99),
    )
    base_lrs = [config.plane_lr, config.lr]
    step, lr_scale, rollbacks = 0, 1.0, 0
    accumulation = 1  # micro-batches per step; doubled on each CUDA out-of-memory error
    if state is not None:
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        step, lr_scale, rollbacks = state["step"], state["lr_scale"], state["rollbacks"]
    ema = _moving_average(model, config.ema_decay)
    if ema is not None and state is not None and state.get("ema") is not None:
        ema.load_state_dict(state["ema"])  # else it starts from the weights resumed
    trainer = DistributedDataParallel(model) if world.world_size > 1 else model

    def payload(with_optimizer: bool = True) -> dict[str, Any]:
        return {
            "model": model.state_dict(),
            "optimizer": optimizer.state_dict() if with_optimizer else None,
            "ema": ema.state_dict() if ema is not None and with_optimizer else None,
            "step": step, "lr_scale": lr_scale, "rollbacks": rollbacks,
            "config": config.model_dump(), "model_config": asdict(model_config),
            "data": data_info, "rng": _rng_state(),
        }

    def snapshot() -> None:
        if world.is_main:
            path = checkpoints.checkpoint_path(run_dir, step)
            checkpoints.save_atomic(payload(), path)
            checkpoints.prune(run_dir, config.keep_checkpoints)
            if on_checkpoint is not None:
                on_checkpoint(path)
        distributed.barrier(world)

    # the state a non-finite loss rolls back to: the last snapshot (or the start)
    last_good = copy.deepcopy(payload())
    print(f"training {track.person}/{track.clip}: {len(clip.train_rows)} train, "
          f"{len(clip.held_out_rows)} held-out frames on {device} x{world.world_size}\n"
          f"{config.model_dump_json()}")

    # --- loop: step -> report -> evaluate -> snapshot -------------------------------------
    started, timer = step, time.perf_counter()
    while step < config.steps:
        if should_stop():
            snapshot()
            log.close()
            raise Stopped(f"stopped at step {step}; checkpoint written")
        for group, base in zip(optimizer.param_groups, base_lrs, strict=True):
            group["lr"] = base * lr_scale * _cosine(step, config.steps, config.final_lr_fraction)
        # Seeded from the step, so a resumed run draws the same batches. The global batch comes
        # from a rank-free seed and each rank takes its slice: two ranks of batch B train on the
        # same frames as one process of batch 2B.
        torch.manual_seed(_step_seed(config.seed, step, rollbacks))
        rows, reference_rows = _sample_rows(clip, reference_pool,
                                            config.batch_size * world.world_size, take_weights)
        mine = slice(world.rank * config.batch_size, (world.rank + 1) * config.batch_size)
        torch.manual_seed(_step_seed(config.seed, step, rollbacks) + 1 + world.rank)  # ray jitter
        optimizer.zero_grad(set_to_none=True)
        out_of_memory = False
        try:
            loss = _accumulate_gradients(trainer, clip, rows[mine], reference_rows[mine], config,
                                         model_config.audio_neighbours, accumulation, device)
        except torch.OutOfMemoryError:
            if accumulation >= config.batch_size:
                raise  # one frame at a time does not fit: nothing left to split
            out_of_memory = True  # handled outside the except, once its frames are released
        if out_of_memory:
            optimizer.zero_grad(set_to_none=True)
            if device.type == "cuda":
                torch.cuda.empty_cache()
            accumulation *= 2
            print(f"out of memory at step {step}: {accumulation} micro-batches of "
                  f"{math.ceil(config.batch_size / accumulation)} frames from now on")
            log.report("Train/micro_batches", accumulation, step)
            continue
        if not torch.isfinite(distributed.mean_across_ranks(loss, world)):
            rollbacks += 1
            if rollbacks > config.max_rollbacks:
                log.close()
                raise RuntimeError(f"loss is not finite at step {step} after {rollbacks - 1} "
                                   "rollbacks; lower lr or check the dataset's audio features")
            model.load_state_dict(last_good["model"])
            optimizer.load_state_dict(last_good["optimizer"])
            if ema is not None:
                ema.load_state_dict(last_good["ema"])
            step, lr_scale = last_good["step"], lr_scale * 0.5
            log.report("Train/rollback", rollbacks, step)
            continue
        optimizer.step()
        if ema is not None:
            ema.update_parameters(model)
        step += 1

        if step % config.log_every == 0 or step == config.steps:
            sec_per_iter = (time.perf_counter() - timer) / max(step - started, 1)
            started, timer = step, time.perf_counter()
            loss_value = float(distributed.mean_across_ranks(loss.detach(), world))
            log.report("Loss/photo", loss_value, step)
            log.report("Timing/sec_per_iter", sec_per_iter, step)
            eta = sec_per_iter * (config.steps - step)
            on_progress(Progress("train", step / config.steps,
                                 f"step {step}/{config.steps} loss {loss_value:.4f} eta {eta:.0f}s",
                                 {"loss": loss_value, "sec_per_iter": sec_per_iter}))
        if config.eval_every and step % config.eval_every == 0 and world.is_main:
            # the audio -> motion regressors are fitted after the renderer: until then a
            # motion-driven renderer is scored on the tracked codes, and the names say so
            tracked = bool(model_config.motion_dim)
            prefix = "Quality/tracked_" if tracked else "Quality/"
            # the trained weights and, beside them, their average (the ones that will be kept)
            scored = {prefix: model} | ({f"{prefix}ema_": ema.module} if ema is not None else {})
            for names, weights in scored.items():
                quick = evaluate(weights, clip, clip.held_out_rows[: config.eval_frames], device,
                                 tracked_motion=tracked, frame_baselines=weights is model)
                for name, value in quick.items():
                    log.report(f"{names}{name}", value, step)
            kept = ema.module if ema is not None else model
            log.image("Frames/held_out", held_out_sample(kept, clip, device, tracked), step)
        if step % config.checkpoint_every == 0 or step == config.steps:
            snapshot()
            last_good = copy.deepcopy(payload())

    # --- audio -> motion, then the final evaluation on the held-out frames ----------------
    if ema is not None:  # the average is the model from here on: fitted to, scored, saved
        model.load_state_dict(ema.module.state_dict())
    metrics: dict[str, float] = {}
    if model_config.motion_dim and world.is_main:
        metrics |= fit_motion(model, clip, config, device, on_progress)
    on_progress(Progress("evaluate", 1.0, "evaluating held-out frames"))
    if world.is_main:
        metrics |= evaluate(model, clip, clip.held_out_rows, device)
        metrics |= _training_fit(model, clip, config.reference_min_gap, device)
    for name, value in metrics.items():
        log.report(f"Quality/{name}", value, step)
    final = run_dir / "model.pt"
    if world.is_main:
        checkpoints.save_atomic({**payload(with_optimizer=False), "metrics": metrics}, final)
    log.close()
    distributed.teardown(world)
    return TrainResult(checkpoint=final, step=step, metrics=metrics)


def evaluate(
    model: TalkingHead, clip: ClipTensors, rows: list[int], device: torch.device, batch: int = 8,
    min_gap: int = 0, tracked_motion: bool = False, frame_baselines: bool = True,
) -> dict[str, float]:
    """Render held-out frames from their own audio and poses over the training frame nearest in
    pose (at least min_gap frames away) — or over themselves, lower face hidden, for a model
    that draws over its target — and score them against the real frames; the last training
    frame and the nearest-pose one alone are the baselines (frame_baselines: False leaves them
    out, as they are the same under any weights). tracked_motion: drive the mouth by the
    frames' tracked motion codes, not the audio regressors'. quality.evaluate has the full
    protocol set (paste-back, landmarks, retrieval)."""
    if not rows:
        return {}
    static = clip.train_rows[-1]
    sums: dict[str, float] = {}
    was_training = model.training
    model.eval()
    with torch.inference_mode():
        for chunk in _chunks(rows, batch):
            target_rows = torch.tensor(chunk)
            references = nearest_pose_rows(clip, chunk, 1, min_gap)[:, 0]
            drawn_over = _drawn_over(model, target_rows, references)
            out = render_outputs(model, clip, target_rows, drawn_over, device, tracked_motion)
            target = clip.images[target_rows].to(device).float() / 255.0
            mask = clip.masks[target_rows].to(device).float() / 255.0
            scores = compute_metrics(out["rgb"], target, mask)
            baselines = {"static": clip.images[[static] * len(chunk)],
                         "reference": clip.images[references]} if frame_baselines else {}
            if model.config.warp_reference:  # the reference as the upsampler sees it
                baselines["warped_reference"] = out["reference"]
            for method, frames in baselines.items():
                scores |= {f"baseline_{method}_{name}": value for name, value in
                           compute_metrics(_unit(frames, device), target, mask).items()}
            for name, value in scores.items():
                sums[name] = sums.get(name, 0.0) + value * len(chunk)
    model.train(was_training)
    return {name: total / len(rows) for name, total in sums.items()}


def _moving_average(model: TalkingHead, decay: float) -> AveragedModel | None:
    """The exponential moving average of model's weights and buffers that
    TrainConfig.ema_decay asks for; None when it is 0."""
    if not decay:
        return None

    def update(averaged: list[torch.Tensor], current: list[torch.Tensor],
               updates: torch.Tensor | int) -> None:
        # the decay warms up (TensorFlow's ExponentialMovingAverage with num_updates): a
        # plain 0.999 would still be a third the random initialisation after 1,000 steps
        weight = 1.0 - min(decay, (1 + int(updates)) / (10 + int(updates)))
        for mean, value in zip(averaged, current, strict=True):
            if mean.is_floating_point():
                mean.lerp_(value, weight)
            else:  # a counter or index buffer has no average
                mean.copy_(value)

    return AveragedModel(model, multi_avg_fn=update, use_buffers=True)


def _drawn_over(model: TalkingHead, rows: torch.Tensor, references: torch.Tensor
                ) -> torch.Tensor:
    """The frames a render of `rows` is drawn over: the rows themselves for a model that redraws
    its target's lower face, else their references."""
    return rows if model.config.draws_over_target else references


def _training_fit(
    model: TalkingHead, clip: ClipTensors, min_gap: int, device: torch.device, frames: int = 64
) -> dict[str, float]:
    """The same scores on training frames (evenly spaced, references as in training): set
    beside the held-out ones they tell a model that cannot fit from one that does not
    generalise."""
    rows = clip.train_rows[:: max(1, len(clip.train_rows) // frames)][:frames]
    scores = evaluate(model, clip, rows, device, min_gap=min_gap)
    return {f"train_{name}": value for name, value in scores.items()
            if not name.startswith("baseline")}


def render_rows(
    model: TalkingHead, clip: ClipTensors, rows: torch.Tensor, reference_rows: torch.Tensor,
    device: torch.device, tracked_motion: bool = False,
) -> torch.Tensor:
    """The model's frames (B, 3, S, S) in [0, 1] for target rows over reference rows; driven by
    the rows' tracked motion codes instead of the audio regressor's if tracked_motion."""
    return render_outputs(model, clip, rows, reference_rows, device, tracked_motion)["rgb"]


def render_outputs(
    model: TalkingHead, clip: ClipTensors, rows: torch.Tensor, reference_rows: torch.Tensor,
    device: torch.device, tracked_motion: bool = False,
) -> dict[str, torch.Tensor]:
    """render_rows' frames as "rgb", and the reference the output was built on as "reference"
    (warped into the target's pose if the model warps), both (B, 3, S, S) in [0, 1]."""
    inputs = model_inputs(clip, rows, reference_rows, model.config.audio_neighbours, device)
    if tracked_motion:
        inputs["motion"] = clip.motion[rows].to(device)
    with torch.inference_mode(), distributed.autocast(device):
        out = model(**inputs)
    return {name: out[name].float().clamp(0, 1) for name in ("rgb", "reference")}


def _unit(images: torch.Tensor, device: torch.device) -> torch.Tensor:
    """uint8 or [0, 1] float images -> float in [0, 1] on the device."""
    images = images.to(device)
    return images.float() / 255.0 if images.dtype == torch.uint8 else images.float()


def held_out_sample(model: TalkingHead, clip: ClipTensors, device: torch.device,
                    tracked_motion: bool = False) -> torch.Tensor:
    """real | rendered of the first held-out frame, side by side (3, S, 2S), for the logs;
    drawn over what evaluate draws it over."""
    if not clip.held_out_rows:
        return torch.zeros(3, 8, 16)
    row = torch.tensor(clip.held_out_rows[:1])
    drawn_over = _drawn_over(model, row, nearest_pose_rows(clip, row.tolist(), 1, 0)[:, 0])
    was_training = model.training
    model.eval()
    rendered = render_rows(model, clip, row, drawn_over, device, tracked_motion)
    model.train(was_training)
    real = clip.images[row].float().cpu() / 255.0
    return torch.cat([real[0], rendered[0].cpu()], dim=2)


class MetricsLog:
    """report(name, value, step) -> one JSON line in run_dir/metrics.jsonl (rank 0 only), and
    the same scalars (plus sample frames) to TensorBoard and WandB where they are switched on."""

    def __init__(self, run_dir: Path, enabled: bool, config: TrainConfig) -> None:
        self.path, self.enabled = run_dir / "metrics.jsonl", enabled
        self.tensorboard: Any = None
        self.wandb: Any = None
        if not enabled:
            return
        if config.tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError:  # an optional extra: the JSONL log is always there
                print("tensorboard is not installed; logging to metrics.jsonl only")
            else:
                self.tensorboard = SummaryWriter(str(run_dir / "tensorboard"))
        if config.wandb_project:
            import wandb  # asked for explicitly, so a missing package is an error

            self.wandb = wandb.init(project=config.wandb_project, dir=str(run_dir),
                                    config=config.model_dump())

    def report(self, name: str, value: float, step: int) -> None:
        if not self.enabled:
            return
        with self.path.open("a") as f:
            f.write(json.dumps({"name": name, "value": float(value), "step": step,
                                "time": time.time()}) + "\n")
        if self.tensorboard is not None:
            self.tensorboard.add_scalar(name, float(value), step)
        if self.wandb is not None:
            self.wandb.log({name: float(value)}, step=step)

    def image(self, name: str, image: torch.Tensor, step: int) -> None:
        """image (3, H, W) in [0, 1]."""
        if self.enabled and self.tensorboard is not None:
            self.tensorboard.add_image(name, image.clamp(0, 1), step)

    def close(self) -> None:
        if self.tensorboard is not None:
            self.tensorboard.close()
        if self.wandb is not None:
            self.wandb.finish()


def _accumulate_gradients(
    trainer: torch.nn.Module, clip: ClipTensors, rows: torch.Tensor,
    reference_rows: torch.Tensor, config: TrainConfig, neighbours: int, micro_batches: int,
    device: torch.device,
) -> torch.Tensor:
    """Forward and backward over the batch in `micro_batches` chunks (1 until memory runs
    out); the gradients add up to the whole batch's. Returns the batch loss, detached."""
    total = torch.zeros((), device=device)
    chunks = list(zip(rows.chunk(micro_batches), reference_rows.chunk(micro_batches),
                      strict=True))
    for index, (chunk, references) in enumerate(chunks):
        inputs = model_inputs(clip, chunk, references, neighbours, device)
        if clip.motion.shape[1]:  # teacher forcing: the tracked code, a little noisy
            motion = clip.motion[chunk].to(device)
            inputs["motion"] = motion + config.motion_noise * torch.randn_like(motion)
        last = index == len(chunks) - 1
        # DDP all-reduces gradients once, after the last micro-batch
        sync = contextlib.nullcontext() if last or not isinstance(
            trainer, DistributedDataParallel) else trainer.no_sync()
        with sync:
            with distributed.autocast(device):
                out = trainer(**inputs, jitter=config.ray_jitter)
            target, face, mouth = _loss_targets(clip, chunk, device)
            loss = _photo_loss(out["rgb"].float(), target, face, mouth, config)
            if config.warp_weight and config.warp_reference:
                loss = loss + config.warp_weight * _warp_loss(out["reference"].float(), target,
                                                              face, mouth)
            loss = loss * (len(chunk) / len(rows))
            loss.backward()
        total += loss.detach()
    return total


def _loss_targets(
    clip: ClipTensors, rows: torch.Tensor, device: torch.device
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The rows' real frames (B, 3, S, S), face regions and mouth boxes (B, 1, S, S), in
    [0, 1]. The face region is what renders paste: the face mask and the box the model hides
    of its reference (the lower face, for a model that draws over its target)."""
    target = clip.images[rows].to(device).float() / 255.0
    size = target.shape[-1]
    face = torch.maximum(clip.masks[rows].to(device).float() / 255.0,
                         box_masks(clip.hidden[rows].to(device), size))
    mouth = box_masks(clip.mouth[rows].to(device), size)
    return target, face, mouth


def _photo_loss(
    rendered: torch.Tensor, target: torch.Tensor, face: torch.Tensor, mouth: torch.Tensor,
    config: TrainConfig,
) -> torch.Tensor:
    """L1 weighted towards the (grown) face and, more, the mouth, where the audio has to show,
    plus (1 - SSIM) over the face. Each frame's loss is normalised on its own and the batch
    takes their mean, so micro-batches and DDP ranks add up to exactly the whole batch."""
    grow = round(config.face_grow * config.image_size)
    if grow:  # the paste region of rendering reaches beyond the face mask (an open jaw)
        face = F.max_pool2d(face, 2 * grow + 1, stride=1, padding=grow)
    weight = config.background_weight + config.face_weight * face + config.mouth_weight * mouth
    per_frame = (weight * (rendered - target).abs()).sum((1, 2, 3)) / (weight.sum((1, 2, 3)) * 3)
    if config.ssim_weight:
        region = torch.maximum(face, mouth)
        dissimilarity = (1.0 - ssim_map(rendered, target)) * region
        per_frame = per_frame + config.ssim_weight * dissimilarity.sum((1, 2, 3)) / region.sum(
            (1, 2, 3)).clamp_min(1.0)
    return per_frame.mean()


def _warp_loss(
    warped: torch.Tensor, target: torch.Tensor, face: torch.Tensor, mouth: torch.Tensor
) -> torch.Tensor:
    """Mean L1 of the warped reference against the target on the face outside the mouth box,
    where another frame of the same head should look the same once it is in the same pose."""
    region = face * (1.0 - mouth)
    per_frame = (region * (warped - target).abs()).sum((1, 2, 3)) / (
        region.sum((1, 2, 3)).clamp_min(1.0) * 3)
    return per_frame.mean()


def _sample_rows(
    clip: ClipTensors, reference_pool: torch.Tensor | None, batch: int,
    weights: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Target frames and their reference frames: drawn independently, or among the target's
    near-pose frames (pool), never the target's own time, so the reference shows another mouth
    and the model has to listen to the audio instead of copying it. weights (over the training
    rows) balance the takes of a joined dataset."""
    train = torch.tensor(clip.train_rows)
    pick = draw_rows(len(train), 2 * batch, weights).view(2, batch)
    if reference_pool is None:
        return train[pick[0]], train[pick[1]]
    choice = torch.randint(reference_pool.shape[1], (batch,))
    return train[pick[0]], reference_pool[pick[0], choice]


def _cosine(step: int, total: int, final_fraction: float) -> float:
    progress = min(step / max(total, 1), 1.0)
    return final_fraction + (1 - final_fraction) * 0.5 * (1 + math.cos(math.pi * progress))


def _step_seed(seed: int, step: int, rollbacks: int) -> int:
    # rollbacks change the stream so a rolled-back run does not replay the batch that diverged;
    # the factor 64 leaves room for one ray-jitter seed per rank
    return (seed * 1_000_003 + step * 7919 + rollbacks * 104_729) * 64


def _rng_state() -> dict[str, Any]:
    state: dict[str, Any] = {"torch": torch.get_rng_state(), "numpy": np.random.get_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _resume_path(run_dir: Path, resume: Resume) -> Path | None:
    if resume is False:
        return None
    if isinstance(resume, Path):
        if not resume.exists():
            raise FileNotFoundError(f"resume checkpoint {resume} does not exist")
        return resume
    found = checkpoints.newest(run_dir)
    if found is None and resume is True:
        raise FileNotFoundError(f"resume=True but {run_dir / 'checkpoints'} holds no checkpoint")
    return found


def _pick_track(dataset_dir: Path, person: str):  # noqa: ANN202 - PersonTrack
    tracks = read_tracks(dataset_dir)
    if not tracks:
        raise InputError(f"dataset {dataset_dir} lists no persons")
    if not person:
        return tracks[0]
    for track in tracks:
        if track.person == person:
            return track
    raise InputError(f"person {person!r} not in dataset; it has {[t.person for t in tracks]}")


def _chunks(items: list[int], size: int) -> Iterator[list[int]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]
