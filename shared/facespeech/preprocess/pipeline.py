"""preprocess.run: one talking video -> the dataset layout of facespeech.dataset.

Stages, each with plain inputs and outputs:
  decode  probe the video, load and check the audio (fails early on bad input)
  track   one streamed pass (preprocess.stream): decode, track in a second process, cut and
          write crops and masks; chunked checkpoints make it resumable
  audio   16 kHz loudness-normalised wav and log-mel features
  write   landmark smoothing, poses and codes, metadata JSON, background plate
  report  report.json and contact_sheet.png in the dataset dir
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
import soundfile as sf

from facespeech import dataset
from facespeech.errors import InputError
from facespeech.hooks import Progress, ProgressFn, StopFn, Stopped, never_stop, no_progress
from facespeech.media import MediaInfo, iter_video_frames, load_audio, probe
from facespeech.preprocess.audio_features import log_mel, normalise_loudness
from facespeech.preprocess.config import Check, PreprocessConfig, PreprocessReport
from facespeech.preprocess.crop import box_origin
from facespeech.preprocess.join import join_videos
from facespeech.preprocess.plate import background_plate
from facespeech.preprocess.pose import (
    blink_codes,
    expression_codes,
    fit_poses,
    lip_codes,
    mouth_opening,
)
from facespeech.preprocess.report import contact_sheet, write_contact_sheet, write_report
from facespeech.preprocess.smoothing import landmark_jitter, smooth_landmarks, stillest_segment
from facespeech.preprocess.stream import WORK_DIR, StreamResult, stream_video
from facespeech.preprocess.tracking import N_LANDMARKS, face_height

# Where each stage starts and ends in the overall progress fraction (the pass dominates).
STAGES = {
    "decode": (0.0, 0.03),
    "track": (0.03, 0.9),
    "audio": (0.9, 0.94),
    "write": (0.94, 0.98),
    "report": (0.98, 1.0),
}
JITTER_SECONDS = 2.0
JOIN_DIR = ".join"  # several videos joined into one; kept until the run ends, for a resume


@dataclass
class _Run:
    """What the stages hand each other, and the hooks they report through."""

    video: Path
    out_dir: Path
    config: PreprocessConfig
    on_progress: ProgressFn
    should_stop: StopFn
    expected_frames: int = 0
    warnings: list[str] = field(default_factory=list)
    checks: list[Check] = field(default_factory=list)
    stage_seconds: dict[str, float] = field(default_factory=dict)
    segment_starts: list[int] = field(default_factory=lambda: [1])  # see dataset.DatasetInfo
    name: str = ""  # what messages call the video

    def __post_init__(self) -> None:
        self.name = self.name or self.video.name

    def progress(self, stage: str, within: float, message: str = "") -> None:
        start, end = STAGES[stage]
        self.on_progress(Progress(stage, start + (end - start) * min(within, 1.0), message))

    def check_stop(self) -> None:
        if self.should_stop():
            raise Stopped("preprocessing stopped on request")

    def frames_in_chunks(self, skip: int = 0) -> Iterator[tuple[int, np.ndarray]]:
        """Full-resolution frames at 25 fps with their index; checks for a stop request
        between chunks."""
        frames = iter_video_frames(self.video, dataset.FPS, None, skip=skip)
        for index, frame in enumerate(frames, start=skip):
            if index % self.config.chunk_frames == 0:
                self.check_stop()
            yield index, frame

    def passed(self, name: str, detail: str) -> None:
        self.checks.append(Check(name, "pass", detail))

    def warn(self, name: str, detail: str) -> None:
        self.checks.append(Check(name, "warn", detail))
        self.warnings.append(detail)

    def fail(self, name: str, detail: str) -> InputError:
        self.checks.append(Check(name, "fail", detail))
        return InputError(f"{self.name}: {detail}")

    def early_checks(self, second_face_ratios: list[float], face_heights: list[float]) -> None:
        """Fail during the pass, as soon as there is enough evidence, not after it."""
        if len(second_face_ratios) >= 5:
            self._check_single_face(second_face_ratios)
        if len(face_heights) >= 100:
            self._check_face_size(face_heights, final=False)

    def _check_single_face(self, ratios: list[float]) -> None:
        ratio = float(np.median(ratios))
        if ratio >= self.config.similar_face_ratio:
            raise self.fail("single_face", (
                f"two faces of similar size are visible (the second is {ratio:.0%} of the "
                "first); upload a video that shows only the person to learn"))

    def _check_face_size(self, heights: list[float], final: bool) -> float:
        face_px = float(np.median(heights))
        config = self.config
        if face_px < config.min_face_px:
            raise self.fail("face_size", (
                f"the face is {face_px:.0f} px tall, below the minimum of "
                f"{config.min_face_px} px; film closer or at a higher resolution"))
        if final and face_px < config.warn_face_px:
            self.warn("face_size", f"the face is {face_px:.0f} px tall (below "
                      f"{config.warn_face_px} px): crops are upscaled and will look soft")
        elif final:
            self.passed("face_size", f"face {face_px:.0f} px tall")
        return face_px


def run(
    video: Path,
    out_dir: Path,
    config: PreprocessConfig = PreprocessConfig(),  # noqa: B008 - frozen, safe to share
    on_progress: ProgressFn = no_progress,
    should_stop: StopFn = never_stop,
    audio: Path | None = None,
    extra_videos: Sequence[Path] = (),
) -> PreprocessReport:
    """Preprocess one talking video (optionally with a separate audio file) into out_dir.

    `extra_videos`, more video of the same person, are joined before `video` and trained on;
    the held-out tail is taken from `video` alone. Run again on the same out_dir after a stop
    or a crash, it continues from the last finished chunk.
    """
    started = time.monotonic()
    job = _Run(video, out_dir, config, on_progress, should_stop)
    out_dir.mkdir(parents=True, exist_ok=True)

    with _timed(job, "decode"):
        if extra_videos:
            if audio is not None:
                raise InputError("a separate audio file goes with a single video; "
                                 "join the videos with their own sound instead")
            for source in [*extra_videos, video]:
                if not _check_video(source, config, job).has_audio:
                    raise InputError(f"{source.name}: no audio track; every joined video "
                                     "needs the person's voice")
            joined = join_videos([*extra_videos, video], out_dir / JOIN_DIR,
                                 job.check_stop)
            job.video, audio, job.segment_starts = joined.video, joined.audio, joined.segment_starts
            job.name = " + ".join(v.name for v in [*extra_videos, video])
        info = _check_video(job.video, config, job)
        job.expected_frames = max(1, round(info.duration_s * dataset.FPS))
        wave = _load_checked_audio(audio or video, info, job)
    # The audio files need nothing from the video: write them beside the pass (a thread
    # fills the moments both cores wait), and only wait for them after it.
    with ThreadPoolExecutor(1) as beside:
        audio_written = beside.submit(_write_audio, job, wave)
        with _timed(job, "track"):
            stream = stream_video(job, info.width, info.height)
            face_px = _check_tracking(job, stream)
        with _timed(job, "audio"):
            audio_written.result()
    with _timed(job, "write"):
        track, jitter = _person_track(job, stream)
        others, earlier = _other_persons(job)
        persons = [t.person for t in others] + [config.person]
        if config.bfm_model:  # before the metadata: its coefficients join expressions.json
            _fit_bfm(job, track)
        dataset.write_metadata(out_dir, dataset.DatasetInfo(
            fps=dataset.FPS, image_size=config.image_size, persons=persons,
            clips={**(earlier.clips if earlier else {}), config.person: config.clip},
            source=job.name,
            segments={**(earlier.segments if earlier else {}),
                      config.person: job.segment_starts},
            dropped_frames={**(earlier.dropped_frames if earlier else {}),
                            config.person: [i + 1 for i in stream.dropped]},
            warnings=job.warnings,
        ), [*others, track])
        unseen = _write_plate(job)
    report = PreprocessReport(
        frames=len(stream.kept), fps_in=info.fps, duration_s=info.duration_s,
        dropped_frames=[i + 1 for i in stream.dropped], face_size_px=face_px,
        warnings=job.warnings, stage_seconds=job.stage_seconds,
        interpolated_frames=[i + 1 for i in stream.interpolated], checks=job.checks,
        landmark_jitter=jitter, background_unseen_fraction=unseen,
        resumed_from_frame=stream.resumed_from,
    )
    with _timed(job, "report"):
        _write_report_files(job, report, track)
        shutil.rmtree(out_dir / WORK_DIR, ignore_errors=True)
        shutil.rmtree(out_dir / JOIN_DIR, ignore_errors=True)
    report.seconds_taken = round(time.monotonic() - started, 2)
    write_report(out_dir, report)
    job.progress("report", 1.0, "done")
    return report


class _timed:
    """Record a stage's wall time in the run, and announce its start."""

    def __init__(self, job: _Run, stage: str) -> None:
        self.job, self.stage = job, stage

    def __enter__(self) -> None:
        self.started = time.monotonic()
        self.job.progress(self.stage, 0.0, f"{self.stage} started")

    def __exit__(self, *_: object) -> None:
        self.job.stage_seconds[self.stage] = round(time.monotonic() - self.started, 2)


def _check_video(video: Path, config: PreprocessConfig, job: _Run) -> MediaInfo:
    info = probe(video)
    if not info.has_video:
        raise job.fail("video", "no video stream; upload a video of the person talking")
    if info.fps < config.min_fps:
        raise job.fail("frame_rate", (
            f"frame rate {info.fps:.1f} fps is below {config.min_fps:g} fps; "
            "mouth motion needs at least that"))
    job.passed("frame_rate", f"{info.fps:.2f} fps")
    if info.duration_s < config.min_seconds:
        raise job.fail("length", (
            f"{info.duration_s:.1f} s is too short; "
            f"at least {config.min_seconds:g} s of the face talking is needed"))
    return info


def _load_checked_audio(source: Path, info: MediaInfo, job: _Run) -> np.ndarray:
    config = job.config
    if source == job.video and not info.has_audio:
        raise job.fail("audio", (
            "the video has no audio track; upload a video with sound "
            "or give the speech as a separate audio file"))
    wave = load_audio(source, dataset.SAMPLE_RATE)
    rms = float(np.sqrt(np.mean(np.square(wave)))) if wave.size else 0.0
    if rms < config.min_audio_rms:
        raise job.fail("audio", (
            f"the audio of {source.name} is silent (RMS "
            f"{20 * np.log10(max(rms, 1e-12)):.0f} dBFS); the model learns lip motion "
            "from speech, so the video must have the person's voice"))
    job.passed("audio", f"audio RMS {20 * np.log10(rms):.0f} dBFS")
    audio_s = wave.size / dataset.SAMPLE_RATE
    mismatch = audio_s - info.duration_s
    if abs(mismatch) > config.max_av_mismatch_s:
        raise job.fail("av_length", (
            f"audio is {audio_s:.2f} s but the video is {info.duration_s:.2f} s; "
            f"they must match within {config.max_av_mismatch_s:g} s"))
    if abs(mismatch) > 1 / dataset.FPS:
        job.warn("av_length", f"audio and video lengths differ by {mismatch:+.2f} s")
    else:
        job.passed("av_length", f"audio and video lengths differ by {mismatch:+.2f} s")
    return wave


def _check_tracking(job: _Run, stream: StreamResult) -> float:
    """The checks that need the whole track; returns the median face height."""
    config = job.config
    if not stream.kept:
        raise job.fail("face", (
            "no face found in any frame; the face must be visible, frontal or near "
            "frontal, and well lit"))
    if stream.second_face_ratios:
        job._check_single_face(stream.second_face_ratios)
    job.passed("single_face", f"{stream.face_switches} switches to a larger face")
    face_px = job._check_face_size([face_height(lm) for lm in stream.landmarks], final=True)
    usable_s = len(stream.kept) / dataset.FPS
    if usable_s < config.min_seconds:
        raise job.fail("usable_length", (
            f"only {usable_s:.1f} s of frames show the face; "
            f"at least {config.min_seconds:g} s are needed"))
    if usable_s < config.warn_seconds:
        job.warn("usable_length", (
            f"{usable_s:.1f} s of usable frames; the model's quality on new frames keeps "
            f"growing with the video's length (about 0.8 dB per doubling measured): "
            f"{config.warn_seconds:g} s or more give a better model"))
    else:
        job.passed("usable_length", f"{usable_s:.1f} s of usable frames")
    if stream.dropped:
        job.warn("missed_frames", (
            f"{len(stream.dropped)} frames without a face were dropped "
            f"({_ranges([i + 1 for i in stream.dropped])})"))
    else:
        job.passed("missed_frames", f"{len(stream.interpolated)} missed frames interpolated")
    return face_px


def _ranges(numbers: list[int], limit: int = 8) -> str:
    """[3, 4, 5, 9] -> "3-5, 9" (the first `limit` runs)."""
    runs: list[list[int]] = []
    for number in numbers:
        if runs and number == runs[-1][1] + 1:
            runs[-1][1] = number
        else:
            runs.append([number, number])
    text = ", ".join(f"{a}-{b}" if a != b else f"{a}" for a, b in runs[:limit])
    return text + (", ..." if len(runs) > limit else "")


def _write_audio(job: _Run, wave: np.ndarray) -> None:
    config = job.config
    wave = normalise_loudness(wave)
    wav_path = dataset.audio_path(job.out_dir, config.person, config.clip)
    wav_path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(wav_path, wave, dataset.SAMPLE_RATE, subtype="PCM_16")
    write_features(job.out_dir, config.person, config.clip, wave)


def write_features(root: Path, person: str, clip: str, wave: np.ndarray) -> None:
    """Log-mel of a clip's 16 kHz wave, stored float16 where the dataset layout says."""
    path = dataset.features_path(root, person, clip)
    path.parent.mkdir(parents=True, exist_ok=True)
    np.save(path, log_mel(wave, dataset.SAMPLE_RATE).astype(np.float16))


def _person_track(
    job: _Run, stream: StreamResult
) -> tuple[dataset.PersonTrack, dict[str, float]]:
    config, size = job.config, job.config.image_size
    origins = np.array([box_origin(b) for b in stream.boxes])  # (K, 3): x0, y0, side
    scale = (size / origins[:, 2])[:, None, None]
    raw = (stream.landmarks - np.column_stack([origins[:, :2], np.zeros(len(origins))])[:, None]
           ) * scale
    crop_landmarks = _smooth_runs(raw, stream.kept, job.segment_starts, config)
    fit = fit_poses(crop_landmarks, size, breaks=_take_breaks(stream.kept, job.segment_starts))
    blinks = blink_codes(fit.normalised)
    mouths = mouth_opening(fit.normalised)
    codes = expression_codes(fit.normalised, config.expression_dims)
    lips = lip_codes(fit.normalised, mouths, config.lip_dims)
    numbers = [i + 1 for i in stream.kept]
    poses = [
        dataset.FramePose(
            frame=number,
            rotation=np.round(fit.rotations[slot], 6).tolist(),
            translation=np.round(fit.translations[slot], 6).tolist(),
            focal=fit.focal,
            crop_box=[round(v, 2) for v in origins[slot]],
        )
        for slot, number in enumerate(numbers)
    ]
    expressions = [
        dataset.FrameExpression(
            frame=number, blink=round(float(blinks[slot]), 4),
            mouth_open=round(float(mouths[slot]), 5),
            code=np.round(codes[slot], 4).tolist(),
            lips=np.round(lips[slot], 4).tolist(),
        )
        for slot, number in enumerate(numbers)
    ]
    main_video = [n for n in numbers if n >= job.segment_starts[-1]]
    held_out = set(held_out_frames(main_video or numbers, config.held_out_fraction))
    track = dataset.PersonTrack(
        person=config.person, clip=config.clip, poses=poses, expressions=expressions,
        landmarks=crop_landmarks[:, :N_LANDMARKS, :2],
        train_frames=[n for n in numbers if n not in held_out],
        held_out_frames=[n for n in numbers if n in held_out],
        segment_starts=job.segment_starts,
        landmarks_3d=crop_landmarks[:, :N_LANDMARKS],
        landmarks_68=(crop_landmarks[:, N_LANDMARKS:, :2]
                      if crop_landmarks.shape[1] > N_LANDMARKS else None),
    )
    return track, _jitter(raw, crop_landmarks, fit.rotations, fit.translations, numbers)


def _take_breaks(kept: list[int], segment_starts: list[int]) -> list[int]:
    """Indices into `kept` (0-based frames) where another joined video begins."""
    takes = np.searchsorted(segment_starts, np.asarray(kept) + 1, side="right")
    return (np.flatnonzero(np.diff(takes)) + 1).tolist()


def _smooth_runs(landmarks: np.ndarray, kept: list[int], segment_starts: list[int],
                 config: PreprocessConfig) -> np.ndarray:
    """Zero-lag One-Euro over each run of consecutive frames (not across dropped gaps nor
    from one joined video into the next)."""
    smoothed = np.empty_like(landmarks, dtype=np.float64)
    numbers = np.asarray(kept) + 1
    breaks = np.flatnonzero((np.diff(kept) != 1) | np.isin(numbers[1:], segment_starts)) + 1
    for run in np.split(np.arange(len(kept)), breaks):
        smoothed[run] = smooth_landmarks(landmarks[run], dataset.FPS,
                                         config.landmark_min_cutoff_hz, config.landmark_beta)
    return smoothed


def _jitter(raw: np.ndarray, smoothed: np.ndarray, rotations: np.ndarray,
            translations: np.ndarray, numbers: list[int]) -> dict[str, float]:
    length = round(JITTER_SECONDS * dataset.FPS)
    if len(raw) < length:
        return {}
    start = stillest_segment(rotations, translations, length)
    window = slice(start, start + length)
    return {
        "raw": round(landmark_jitter(raw[window]), 3),
        "smoothed": round(landmark_jitter(smoothed[window]), 3),
        "segment_start_frame": float(numbers[start]),
    }


def _other_persons(job: _Run) -> tuple[list[dataset.PersonTrack], dataset.DatasetInfo | None]:
    """Persons already in out_dir (a dataset of several persons is built one video at a
    time, each run with its own `person`); they are kept, this run's person is replaced."""
    if not (job.out_dir / "metadata" / "info.json").is_file():
        return [], None
    try:
        info = dataset.read_info(job.out_dir)
        tracks = dataset.read_tracks(job.out_dir)
    except (OSError, KeyError, TypeError, ValueError):
        job.warn("persons", "metadata already in the output folder could not be read; "
                 "it was replaced by this run's person only")
        return [], None
    if info.image_size != job.config.image_size:
        raise job.fail("persons", (
            f"the output folder holds persons at {info.image_size} px; this run makes "
            f"{job.config.image_size} px crops, and one dataset has one crop size"))
    return [t for t in tracks if t.person != job.config.person], info


def _fit_bfm(job: _Run, track: dataset.PersonTrack) -> None:
    """Basel Face Model coefficients: identity shared, expression, pose and lighting per frame.
    On a GPU the crops join the landmarks (photometric term, nvdiffrast); on the CPU that
    costs minutes per thousand frames, so the 68 landmarks alone are fitted there."""
    import torch

    from facespeech.preprocess.bfm import MEDIAPIPE_68, FitConfig, fit_3dmm, load_bfm

    assert job.config.bfm_model is not None and track.landmarks_3d is not None
    try:
        model = load_bfm(Path(job.config.bfm_model))
    except ValueError as error:
        raise job.fail("bfm_model", str(error)) from error
    landmarks = np.asarray(track.landmarks_3d)[:, MEDIAPIPE_68, :2]
    config = FitConfig()
    if not torch.cuda.is_available():
        fit = fit_3dmm(model, landmarks, config=config)
    else:
        frames = _crops_for_fit(job, track, config.photo_size)
        fit = fit_3dmm(model, landmarks, frames, config, device="cuda",
                       landmark_width=job.config.image_size)
    path = dataset.bfm_path(job.out_dir, job.config.person)
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(path, frames=[p.frame for p in track.poses], identity=fit.identity,
             albedo=fit.albedo, expression=fit.expression, rotation=fit.rotation,
             scale=fit.scale, shift=fit.shift, lighting=fit.lighting)
    for expression, coefficients in zip(track.expressions, fit.expression, strict=True):
        expression.bfm = np.round(coefficients, 4).tolist()
    photometric = ("" if fit.photometric_error is None else
                   f", photometric error {fit.photometric_error:.3f} ({fit.renderer})")
    job.passed("bfm_fit", f"landmark RMSE {fit.landmark_rmse_px:.2f} px{photometric}")


def _crops_for_fit(job: _Run, track: dataset.PersonTrack, size: int) -> np.ndarray:
    """(N, size, size, 3) RGB crops of the track's frames, scaled down for the photometric
    term (a 3-minute clip at 224 px is 0.7 GB instead of 3.5 GB at 512)."""
    crops = np.empty((len(track.poses), size, size, 3), np.uint8)
    for i, pose in enumerate(track.poses):
        image = cv2.imread(str(dataset.image_path(job.out_dir, job.config.person, pose.frame)))
        crops[i] = cv2.cvtColor(cv2.resize(image, (size, size), interpolation=cv2.INTER_AREA),
                                cv2.COLOR_BGR2RGB)
    return crops


def _write_plate(job: _Run) -> float | None:
    if not job.config.segment:
        return None
    plate = background_plate(job.out_dir / WORK_DIR / "plate", job.config.plate_samples)
    if plate is None:
        return None
    rgb, unseen = plate
    cv2.imwrite(str(dataset.background_path(job.out_dir)), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR),
                [cv2.IMWRITE_JPEG_QUALITY, 95])
    if unseen > 0.02:
        job.warn("background_plate", (
            f"{unseen:.0%} of the background was never uncovered and was inpainted"))
    return round(unseen, 4)


def _write_report_files(job: _Run, report: PreprocessReport, track: dataset.PersonTrack
                        ) -> None:
    count = min(job.config.contact_sheet_frames, len(track.poses))
    slots = np.linspace(0, len(track.poses) - 1, count).round().astype(int)
    points = [np.array(track.landmarks[i]) for i in slots]
    if track.landmarks_68 is not None:
        points = [np.vstack([p, track.landmarks_68[i]]) for p, i in zip(points, slots, strict=True)]
    sheet = contact_sheet(job.out_dir, job.config.person, [track.poses[i].frame for i in slots],
                          points, job.config.image_size)
    written = [write_contact_sheet(job.out_dir, sheet), write_report(job.out_dir, report)]
    if dataset.background_path(job.out_dir).is_file():
        written.append(dataset.background_path(job.out_dir))
    report.files = [p.name for p in written]


def held_out_frames(frame_numbers: list[int], fraction: float) -> list[int]:
    """The last `fraction` of the frames (at least one): a contiguous, unseen stretch."""
    count = max(1, round(fraction * len(frame_numbers)))
    return frame_numbers[-count:]
