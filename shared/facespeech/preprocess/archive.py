"""import_archive: a zip or tar extracted safely: a dataset in the layout is completed; an
archive of videos (several takes of one person) is preprocessed as one joined clip."""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path, PurePosixPath

import numpy as np
import soundfile as sf
from PIL import Image

from facespeech import dataset
from facespeech.errors import InputError
from facespeech.hooks import ProgressFn, StopFn, never_stop, no_progress
from facespeech.media import load_audio
from facespeech.preprocess.archive_check import Member, ReadMember, open_archive
from facespeech.preprocess.config import PreprocessConfig, PreprocessReport
from facespeech.preprocess.crop import face_mask
from facespeech.preprocess.masks import semantic_mask
from facespeech.preprocess.pipeline import held_out_frames, run, write_features
from facespeech.preprocess.tracking import N_LANDMARKS, face_height

NESTED_ARCHIVE_SUFFIXES = (".zip", ".tar", ".gz", ".tgz", ".bz2", ".xz", ".7z", ".rar")
COPY_CHUNK = 1024 * 1024
VIDEO_SUFFIXES = (".mp4", ".mov", ".m4v", ".webm", ".mkv")
MAX_TAKES = 20


def import_archive(
    archive: Path,
    out_dir: Path,
    config: PreprocessConfig = PreprocessConfig(),  # noqa: B008 - frozen, safe to share
    on_progress: ProgressFn = no_progress,
    should_stop: StopFn = never_stop,
) -> PreprocessReport:
    """Extract `archive` into out_dir, check the layout, and add what is missing
    (16 kHz audio, features, split.json, masks). An archive holding only videos is taken
    as several takes of one person: preprocessed together, in name order, the last take's
    tail held out. InputError says what is wrong."""
    started = time.monotonic()
    warnings: list[str] = []
    staging = out_dir / ".extracting"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    with open_archive(archive, config) as (members, read_member):
        warnings += _extract(members, read_member, staging, config)
    takes = _takes(staging)
    if takes:
        try:
            report = run(takes[-1], out_dir, config, on_progress, should_stop,
                         extra_videos=takes[:-1])
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        report.warnings = warnings + report.warnings
        return report
    root = _layout_root(archive, staging)
    for entry in root.iterdir():
        target = out_dir / entry.name
        shutil.rmtree(target, ignore_errors=True) if target.is_dir() else target.unlink(True)
        entry.replace(target)
    shutil.rmtree(staging, ignore_errors=True)
    report = complete_layout(out_dir, config, source=archive.name)
    report.warnings = warnings + report.warnings
    report.seconds_taken = time.monotonic() - started
    return report


def _extract(
    members: list[Member], read_member: ReadMember, staging: Path, config: PreprocessConfig
) -> list[str]:
    """Copy members out, counting real bytes: headers can lie about sizes."""
    warnings: list[str] = []
    written = 0
    for member in members:
        target = staging / PurePosixPath(member.name.replace("\\", "/"))
        if member.is_dir:
            target.mkdir(parents=True, exist_ok=True)
            continue
        if target.name.lower().endswith(NESTED_ARCHIVE_SUFFIXES):
            warnings.append(f"nested archive {member.name} was not extracted")
            continue
        target.parent.mkdir(parents=True, exist_ok=True)
        with read_member(member.name) as source, target.open("wb") as sink:
            while chunk := source.read(COPY_CHUNK):
                written += len(chunk)
                if written > config.archive_max_bytes:
                    raise InputError("the archive unpacks to more than the size limit of "
                                     f"{config.archive_max_bytes / 1e9:.1f} GB")
                sink.write(chunk)
    return warnings


def _takes(staging: Path) -> list[Path]:
    """The videos, in name order, when every file extracted is one; else []."""
    files = sorted(p for p in staging.rglob("*") if p.is_file())
    if not files or any(p.suffix.lower() not in VIDEO_SUFFIXES for p in files):
        return []
    if len(files) > MAX_TAKES:
        raise InputError(f"the archive holds {len(files)} videos; at most {MAX_TAKES} takes "
                         "of one person are joined")
    return files


def _layout_root(archive: Path, staging: Path) -> Path:
    """The folder holding metadata/info.json: the archive root or its one top folder."""
    candidates = [staging, *(p for p in staging.iterdir() if p.is_dir())]
    for candidate in candidates:
        if (candidate / "metadata" / "info.json").is_file():
            return candidate
    raise InputError(f"{archive.name}: no metadata/info.json; the archive must be in the "
                     "dataset layout (images/, audio/, metadata/) or hold only videos "
                     f"({', '.join(VIDEO_SUFFIXES)}) of one person")


def complete_layout(root: Path, config: PreprocessConfig, source: str = "") -> PreprocessReport:
    """Validate a dataset folder and fill in split.json, 16 kHz audio, features and masks."""
    info = _read_info(root)
    _check_persons_listed(root, info, source)
    _ensure_split(root, info, config)
    try:
        tracks = dataset.read_tracks(root)
    except (KeyError, TypeError, ValueError) as error:
        raise InputError(f"{source}: metadata files do not match the dataset layout ({error})"
                         ) from error
    warnings: list[str] = []
    for track in tracks:
        _check_track(root, info, track, source)
        _ensure_audio_and_features(root, track, source)
        warnings += _ensure_masks(root, info, track, config)
        if config.segment:
            warnings += _ensure_label_maps(root, info, track, config)
    frames = sum(len(t.poses) for t in tracks)
    sizes = [face_height(np.array(lm)) for t in tracks for lm in t.landmarks[:50]
             if len(lm) > 152]
    return PreprocessReport(
        frames=frames, fps_in=float(info.fps), duration_s=frames / info.fps,
        dropped_frames=[n for d in info.dropped_frames.values() for n in d],
        face_size_px=float(np.median(sizes)) if sizes else 0.0,
        warnings=info.warnings + warnings,
    )


def _read_info(root: Path) -> dataset.DatasetInfo:
    try:
        info = dataset.read_info(root)
    except (OSError, TypeError, ValueError) as error:
        raise InputError(f"metadata/info.json is not valid ({error})") from error
    if info.fps != dataset.FPS:
        raise InputError(f"metadata/info.json says {info.fps} fps; datasets are {dataset.FPS} fps")
    if not info.persons or any(p not in info.clips for p in info.persons):
        raise InputError("metadata/info.json must list persons and a clip for each")
    return info


def _check_persons_listed(root: Path, info: dataset.DatasetInfo, source: str) -> None:
    """Every person of info.json has an entry in each per-person metadata file."""
    for name in ("poses.json", "expressions.json", "landmarks.json"):
        path = root / "metadata" / name
        if not path.is_file():
            raise InputError(f"{source}: metadata/{name} is missing")
        try:
            listed = json.loads(path.read_text())
        except ValueError as error:
            raise InputError(f"{source}: metadata/{name} is not valid JSON ({error})") from error
        missing = [p for p in info.persons if p not in listed]
        if missing:
            raise InputError(f"{source}: person {missing[0]} is listed in metadata/info.json "
                             f"but has no entry in metadata/{name}")


def _ensure_split(root: Path, info: dataset.DatasetInfo, config: PreprocessConfig) -> None:
    """Write split.json, or add the persons it lacks (the last frames of each held out)."""
    split_path = root / "metadata" / "split.json"
    split = json.loads(split_path.read_text()) if split_path.is_file() else {}
    if all(person in split for person in info.persons):
        return
    poses = json.loads((root / "metadata" / "poses.json").read_text())
    for person in [name for name in info.persons if name not in split]:
        numbers = [p["frame"] for p in poses.get(person, [])]
        held_out = held_out_frames(numbers, config.held_out_fraction) if numbers else []
        split[person] = {"train": [n for n in numbers if n not in set(held_out)],
                         "held_out": held_out}
    split_path.write_text(json.dumps(split))


def _check_track(root: Path, info: dataset.DatasetInfo, track: dataset.PersonTrack,
                 source: str) -> None:
    person = track.person
    counts = {"poses": len(track.poses), "expressions": len(track.expressions),
              "landmarks": len(track.landmarks)}
    if len(set(counts.values())) != 1 or not track.poses:
        raise InputError(f"{source}: person {person}: metadata frame counts differ or are "
                         f"empty ({counts})")
    images = {int(p.stem) for p in (root / "images" / person).glob("*.jpg") if p.stem.isdigit()}
    missing = [p.frame for p in track.poses if p.frame not in images]
    if missing:
        raise InputError(f"{source}: person {person}: {len(missing)} images listed in "
                         f"metadata are missing (first: frame {missing[0]})")
    for pose in track.poses:
        with Image.open(dataset.image_path(root, person, pose.frame)) as image:
            if image.size != (info.image_size, info.image_size):
                raise InputError(
                    f"{source}: images/{person}/{pose.frame:05d}.jpg is "
                    f"{image.size[0]}x{image.size[1]}; all images must be "
                    f"{info.image_size}x{info.image_size} as metadata/info.json says"
                )


def _ensure_audio_and_features(root: Path, track: dataset.PersonTrack, source: str) -> None:
    """Audio in another rate (22.05 kHz is accepted) is rewritten at 16 kHz mono."""
    wav = dataset.audio_path(root, track.person, track.clip)
    if not wav.is_file():
        raise InputError(f"{source}: audio/{track.person}/{track.clip}.wav is missing")
    if sf.info(wav).samplerate != dataset.SAMPLE_RATE or sf.info(wav).channels != 1:
        sf.write(wav, load_audio(wav, dataset.SAMPLE_RATE), dataset.SAMPLE_RATE,
                 subtype="PCM_16")
    if not dataset.features_path(root, track.person, track.clip).is_file():
        write_features(root, track.person, track.clip, load_audio(wav, dataset.SAMPLE_RATE))


def _ensure_masks(root: Path, info: dataset.DatasetInfo, track: dataset.PersonTrack,
                  config: PreprocessConfig) -> list[str]:
    missing = [(p.frame, lm) for p, lm in zip(track.poses, track.landmarks, strict=True)
               if not dataset.mask_path(root, track.person, p.frame).is_file()]
    if not missing:
        return []
    (root / "masks" / track.person).mkdir(parents=True, exist_ok=True)
    dilate_px = round(config.mask_dilate_fraction * info.image_size)
    for frame, landmarks in missing:
        mask = face_mask(np.array(landmarks, dtype=np.float32), info.image_size, dilate_px)
        Image.fromarray(mask).save(dataset.mask_path(root, track.person, frame))
    return [f"{len(missing)} masks of {track.person} were made from landmarks"]


def _ensure_label_maps(root: Path, info: dataset.DatasetInfo, track: dataset.PersonTrack,
                       config: PreprocessConfig) -> list[str]:
    """Semantic label maps for frames without one: selfie segmentation of the crop itself
    for person/background, the landmarks for face, mouth and neck/torso."""
    missing = [(p.frame, lm) for p, lm in zip(track.poses, track.landmarks, strict=True)
               if not dataset.semantic_path(root, track.person, p.frame).is_file()]
    if not missing or len(missing[0][1]) < N_LANDMARKS:  # needs FaceMesh's 478 points
        return []
    import mediapipe as mp

    (root / "semantic" / track.person).mkdir(parents=True, exist_ok=True)
    dilate_px = round(config.mask_dilate_fraction * info.image_size)
    with mp.solutions.selfie_segmentation.SelfieSegmentation(model_selection=0) as segmenter:
        for frame, landmarks in missing:
            with Image.open(dataset.image_path(root, track.person, frame)) as image:
                rgb = np.array(image.convert("RGB"))
            person = np.round(segmenter.process(rgb).segmentation_mask * 255).astype(np.uint8)
            _, labels = semantic_mask(np.array(landmarks, dtype=np.float32), person,
                                      info.image_size, dilate_px)
            Image.fromarray(labels).save(dataset.semantic_path(root, track.person, frame))
    return [f"{len(missing)} label maps of {track.person} were made by segmentation"]
