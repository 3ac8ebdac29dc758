"""Decode -> track -> crop in one streamed pass, chunked and resumable.

Each frame is decoded once. The main process keeps only a region around the face (at most
the crop's resolution) and sends a small copy of it to the tracker, which runs in a second
process. Crops can only be cut once the crop box is final: the box is smoothed over time with
a zero-phase Gaussian, so frame i waits for the landmarks of the next few frames (the
filter's radius). Memory is therefore bounded by that look-ahead, not by the video's length.

Every `checkpoint_frames` frames, once all of a chunk's crops are on disk, the chunk's
landmarks and boxes go to out_dir/.work/chunk_NNNNN.npz; a restarted run loads the finished
chunks, decodes past them without converting their frames, and continues from there.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import cv2
import numpy as np

from facespeech import dataset
from facespeech.preprocess.crop import (
    box_origin,
    cut_crop,
    keep_inside,
    raw_boxes,
    smooth_boxes,
    to_crop_pixels,
)
from facespeech.preprocess.masks import semantic_mask, warp_to_crop
from facespeech.preprocess.track_worker import TrackRequest, TrackResult, open_tracker
from facespeech.preprocess.tracking import N_LANDMARKS, GapFiller, face_height

if TYPE_CHECKING:
    from facespeech.preprocess.pipeline import _Run

WORK_DIR = ".work"
CHUNK_NAME = "chunk_{:05d}.npz"
MAX_PENDING_WRITES = 32
WHOLE_FRAME_MAX_SIDE = 1920


@dataclass
class Anchor:
    """Where the main face was last seen: centre and face height, source pixels."""

    cx: float
    cy: float
    height: float


@dataclass
class _Region:
    pixels: np.ndarray  # the kept part of the frame
    origin: tuple[float, float]  # source position of its top-left pixel
    scale: float  # region px = (source px - origin) * scale
    track_scale: float  # the same for the copy sent to the tracker


@dataclass
class StreamResult:
    frame_count: int
    kept: list[int]  # 0-based frames with a face (tracked or interpolated)
    landmarks: np.ndarray  # (K, 478, 3) source pixels, in `kept` order
    boxes: np.ndarray  # (K, 3) final crop boxes: centre x, centre y, side
    dropped: list[int]
    interpolated: list[int]
    second_face_ratios: list[float]  # per check frame: second-largest / largest face height
    face_switches: int  # times the tracker was moved to a larger face
    resumed_from: int = 0  # first frame this run had to process (0: a fresh run)


@dataclass
class _Chunk:
    kept: list[int] = field(default_factory=list)
    landmarks: list[np.ndarray] = field(default_factory=list)
    boxes: list[np.ndarray] = field(default_factory=list)
    dropped: list[int] = field(default_factory=list)
    interpolated: list[int] = field(default_factory=list)
    ratios: list[float] = field(default_factory=list)
    switches: int = 0
    finished_frames: int = 0
    writes: list[Future[None]] = field(default_factory=list)


class _BoxSmoother:
    """Gaussian smoothing of the crop-box path with a bounded look-ahead, each joined take on
    its own (a box blended with another video's framing zooms the take's first second).

    Gives, slot by slot, exactly what smoothing each take's whole path at once would give:
    each output needs only the boxes within the filter's radius on either side.
    """

    def __init__(self, center_sigma: float, size_sigma: float, history: np.ndarray,
                 history_takes: list[int]) -> None:
        self.sigmas = (center_sigma, size_sigma)
        self.radius = max(int(4.0 * s + 0.5) for s in self.sigmas)  # scipy's truncate=4
        self.raw: list[np.ndarray] = list(history)
        self.takes: list[int] = list(history_takes)
        self.done = len(self.raw)

    def push(self, box: np.ndarray, take: int) -> None:
        self.raw.append(box)
        self.takes.append(take)

    def ready(self, final: bool) -> np.ndarray:
        end = len(self.raw) if final else len(self.raw) - self.radius
        if end <= self.done:
            return np.zeros((0, 3))
        low = max(0, self.done - self.radius)
        takes = np.array(self.takes[low:])
        cuts = np.flatnonzero(np.diff(takes)) + 1
        smoothed = np.concatenate([smooth_boxes(part, *self.sigmas)
                                   for part in np.split(np.array(self.raw[low:]), cuts)])
        out = smoothed[self.done - low: end - low]
        self.done = end
        return out


class _Stream:
    """State of one pass; `run` drives it frame by frame."""

    def __init__(self, job: _Run, width: int, height: int, work: Path) -> None:
        self.job, self.config = job, job.config
        self.width, self.height = width, height
        self.work = work
        self.person = job.config.person
        self.chunks: dict[int, _Chunk] = {}
        self.regions: dict[int, _Region] = {}
        # per frame: person mask of some region and that region's (origin x, origin y, scale)
        self.person_masks: dict[int, tuple[np.ndarray, tuple[float, float, float]]] = {}
        self.last_person: tuple[np.ndarray, tuple[float, float, float]] | None = None
        self.checks: dict[int, np.ndarray] = {}
        self.slot_queue: deque[tuple[int, np.ndarray, bool]] = deque()
        self.anchor: Anchor | None = None
        self.misses = 0
        self.finished: list[_Chunk] = []
        self.plate_dir = work / "plate"
        self.pool = ThreadPoolExecutor(max(1, self.config.write_threads))
        self.pending_writes: deque[Future[None]] = deque()
        self.face_heights: list[float] = []  # of kept frames: for the early checks
        self.ratios: list[float] = []
        self.resumed_from = 0
        self._resume()

    # -- resume ------------------------------------------------------------------------

    def _resume(self) -> None:
        """Load finished chunks; set the gap filler, the box smoother and the anchor."""
        kept_landmarks: list[np.ndarray] = []
        last_kept: tuple[int, np.ndarray] | None = None
        index = 0
        while (path := self.work / CHUNK_NAME.format(index)).is_file():
            with np.load(path) as saved:
                chunk = _Chunk(
                    kept=saved["kept"].tolist(), landmarks=list(saved["landmarks"]),
                    boxes=list(saved["boxes"]), dropped=saved["dropped"].tolist(),
                    interpolated=saved["interpolated"].tolist(),
                    ratios=saved["ratios"].tolist(), switches=int(saved["switches"]),
                )
            self.finished.append(chunk)
            kept_landmarks += chunk.landmarks
            self.ratios += chunk.ratios
            self.face_heights += [face_height(lm) for lm in chunk.landmarks]
            end = (index + 1) * self.config.checkpoint_frames
            if chunk.kept and chunk.kept[-1] == end - 1:
                last_kept = (chunk.kept[-1], chunk.landmarks[-1])
            elif chunk.kept or chunk.dropped:
                last_kept = None
            index += 1
        self.resumed_from = index * self.config.checkpoint_frames
        history = (
            raw_boxes(np.stack(kept_landmarks), self.config.crop_scale,
                      self.config.crop_shift_down)
            if kept_landmarks else np.zeros((0, 3))
        )
        self.smoother = _BoxSmoother(
            self.config.smooth_center_sigma, self.config.smooth_size_sigma, history,
            [self._take_of(index) for chunk in self.finished for index in chunk.kept],
        )
        self.gaps = GapFiller(self.config.max_gap_frames, self.resumed_from, last_kept)
        self.request_take = self._take_of(self.resumed_from)
        if last_kept is not None and self._take_of(last_kept[0]) == self.request_take:
            self.anchor = _anchor_of(last_kept[1])

    # -- per frame -----------------------------------------------------------------------

    def region_request(self, index: int, frame: np.ndarray) -> TrackRequest:
        """Cut the region to keep and to track; add a whole-frame copy on check frames."""
        config = self.config
        take = self._take_of(index)
        if take != self.request_take:  # another joined video: the face is elsewhere, search
            self.request_take, self.anchor = take, None
        region = self._cut_region(frame)
        self.regions[index] = region
        side = max(region.pixels.shape[:2])
        limit = config.track_region_side if self.anchor else config.track_max_side
        shrink = min(1.0, limit / side)
        region.track_scale = region.scale * shrink  # the person mask comes back this size
        # Segment every few frames, and always while searching (the region just changed).
        segment = config.segment and (index % config.segment_every == 0 or self.anchor is None)
        if self.anchor is None:  # whole frame: the tracker searches and zooms in itself
            request = TrackRequest(index, region.pixels, region.origin, region.scale,
                                   segment=segment, search_side=limit)
        else:
            request = TrackRequest(index, _resized(region.pixels, shrink), region.origin,
                                   region.track_scale, segment=segment)
        if index % config.check_every == 0:
            check_scale = min(1.0, config.check_max_side / max(self.width, self.height))
            request.check = _resized(frame, check_scale)
            request.check_scale = check_scale
            self.checks[index] = request.check
        return request

    def _cut_region(self, frame: np.ndarray) -> _Region:
        if self.anchor is None:  # face not found yet: keep the frame, at most full HD
            keep = min(1.0, WHOLE_FRAME_MAX_SIDE / max(self.width, self.height))
            return _Region(np.ascontiguousarray(_resized(frame, keep)), (0.0, 0.0), keep, keep)
        config, anchor = self.config, self.anchor
        half = config.region_face_heights * anchor.height / 2
        x0, x1 = max(0, int(anchor.cx - half)), min(self.width, int(anchor.cx + half + 1))
        y0, y1 = max(0, int(anchor.cy - half)), min(self.height, int(anchor.cy + half + 1))
        # Keep no more detail than the crop can use (with headroom for zooming in).
        keep = min(1.0, 1.25 * config.image_size / (config.crop_scale * anchor.height))
        pixels = _resized(frame[y0:y1, x0:x1], keep)
        return _Region(np.ascontiguousarray(pixels), (float(x0), float(y0)), keep, keep)

    def take_result(self, result: TrackResult) -> None:
        index = result.index
        self._follow(result)
        if result.person is not None:
            region = self.regions[index]
            self.last_person = (result.person, (*region.origin, region.track_scale))
        if self.last_person is not None and self.config.segment:
            # Frames between segmented ones reuse the last mask, mapped from its own region.
            self.person_masks[index] = self.last_person
        if result.faces is not None:
            self._take_check(index, result)
        for frame_index, landmarks, interpolated in self.gaps.push(result.landmarks):
            self._finalise(frame_index, landmarks, interpolated)
        self._cut_ready(final=False)

    def _follow(self, result: TrackResult) -> None:
        if self._take_of(result.index) != self.request_take:
            return  # a frame of the previous joined video, still in flight: not where to look
        if result.landmarks is None:
            self.misses += 1
            if self.misses > 2:  # lost it: search the whole frame again
                self.anchor = None
            return
        self.misses = 0
        seen = _anchor_of(result.landmarks)
        anchor = self.anchor
        drift = self.config.recentre_fraction * seen.height
        if (anchor is None or abs(seen.cx - anchor.cx) > drift
                or abs(seen.cy - anchor.cy) > drift or abs(seen.height / anchor.height - 1) > 0.15):
            self.anchor = seen

    def _take_check(self, index: int, result: TrackResult) -> None:
        chunk = self._chunk(index)
        faces = sorted(result.faces or [], key=lambda f: f[3], reverse=True)
        if faces:
            chunk.ratios.append(faces[1][3] / faces[0][3] if len(faces) > 1 else 0.0)
            self.ratios.append(chunk.ratios[-1])
            x, y, w, h = faces[0]
            if self.anchor is not None and not (x <= self.anchor.cx <= x + w
                                                and y <= self.anchor.cy <= y + h):
                # Follow the largest face: the tracker had locked onto another one.
                self.anchor = Anchor(x + w / 2, y + h / 2, h)
                chunk.switches += 1
        check = self.checks.pop(index)
        if result.check_person is not None:
            self._save_plate_sample(index, check, result.check_person)

    def _save_plate_sample(self, index: int, rgb: np.ndarray, person: np.ndarray) -> None:
        self.plate_dir.mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(self.plate_dir / f"{index:06d}.jpg"), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR),
                    [cv2.IMWRITE_JPEG_QUALITY, 95])
        cv2.imwrite(str(self.plate_dir / f"{index:06d}.png"), person)

    def _finalise(self, index: int, landmarks: np.ndarray | None, interpolated: bool) -> None:
        if landmarks is None:
            chunk = self._chunk(index)
            chunk.dropped.append(index)
            self._forget(index)
            self._frame_done(index)
            return
        self.slot_queue.append((index, landmarks, interpolated))
        self.smoother.push(raw_boxes(landmarks[None], self.config.crop_scale,
                                     self.config.crop_shift_down)[0], self._take_of(index))

    def _take_of(self, index: int) -> int:
        """Which joined take the 0-based frame index belongs to."""
        return int(np.searchsorted(self.job.segment_starts, index + 1, side="right")) - 1

    def _cut_ready(self, final: bool) -> None:
        boxes = self.smoother.ready(final)
        if len(boxes) == 0:
            return
        boxes = keep_inside(boxes, self.width, self.height)
        for box in boxes:
            index, landmarks, interpolated = self.slot_queue.popleft()
            chunk = self._chunk(index)
            chunk.kept.append(index)
            chunk.landmarks.append(landmarks.astype(np.float32))
            chunk.boxes.append(box)
            if interpolated:
                chunk.interpolated.append(index)
            region = self.regions.pop(index)
            person = self.person_masks.pop(index, None)
            write = self.pool.submit(self._write_frame, index, region, person, landmarks, box)
            chunk.writes.append(write)
            self.pending_writes.append(write)
            self.face_heights.append(face_height(landmarks))
            self._frame_done(index)
            self._bound_pending_writes()

    def _write_frame(self, index: int, region: _Region,
                     person: tuple[np.ndarray, tuple[float, float, float]] | None,
                     landmarks: np.ndarray, box: np.ndarray) -> None:
        """Cut, mask and write one crop (runs in the writer threads)."""
        config, size = self.config, self.config.image_size
        x0, y0, side = box_origin(box)
        in_region = np.array([(box[0] - region.origin[0]) * region.scale,
                              (box[1] - region.origin[1]) * region.scale, side * region.scale])
        crop = cut_crop(region.pixels, in_region, size)
        crop_landmarks = to_crop_pixels(landmarks, box, size)
        person_crop = None
        if person is not None:
            person_crop = warp_to_crop(*person, (x0, y0, side), size)
        face, labels = semantic_mask(crop_landmarks, person_crop, size,
                                     round(config.mask_dilate_fraction * size))
        number = index + 1
        root = self.job.out_dir
        cv2.imwrite(str(dataset.image_path(root, self.person, number)),
                    cv2.cvtColor(crop, cv2.COLOR_RGB2BGR),
                    [cv2.IMWRITE_JPEG_QUALITY, config.jpeg_quality])
        # A 1-bit PNG encodes 5x faster than an 8-bit one and reads back as 0/255.
        cv2.imwrite(str(dataset.mask_path(root, self.person, number)), face,
                    [cv2.IMWRITE_PNG_BILEVEL, 1])
        if person_crop is not None:
            cv2.imwrite(str(dataset.semantic_path(root, self.person, number)), labels,
                        [cv2.IMWRITE_PNG_COMPRESSION, 1])

    def _bound_pending_writes(self) -> None:
        while self.pending_writes and self.pending_writes[0].done():
            self.pending_writes.popleft().result()
        if len(self.pending_writes) > MAX_PENDING_WRITES:
            self.pending_writes.popleft().result()

    def _forget(self, index: int) -> None:
        self.regions.pop(index, None)
        self.person_masks.pop(index, None)

    def _chunk(self, index: int) -> _Chunk:
        return self.chunks.setdefault(index // self.config.checkpoint_frames, _Chunk())

    def _frame_done(self, index: int) -> None:
        self._chunk(index).finished_frames += 1

    def checkpoint(self, frame_count: int | None) -> None:
        """Save every chunk, in order, whose frames are all written."""
        size = self.config.checkpoint_frames
        while self.chunks:
            number = min(self.chunks)
            chunk = self.chunks[number]
            length = size if frame_count is None else min(size, frame_count - number * size)
            if chunk.finished_frames < length:
                return
            for write in chunk.writes:
                write.result()
            _save_chunk(self.work / CHUNK_NAME.format(number), chunk)
            self.finished.append(self.chunks.pop(number))

    def finish(self, frame_count: int) -> None:
        for frame_index, landmarks, interpolated in self.gaps.finish():
            self._finalise(frame_index, landmarks, interpolated)
        self._cut_ready(final=True)
        self.checkpoint(frame_count)
        assert not self.chunks, f"chunks {sorted(self.chunks)} were never finished"

    def result(self, frame_count: int) -> StreamResult:
        chunks = self.finished
        kept = [i for c in chunks for i in c.kept]
        return StreamResult(
            frame_count=frame_count, kept=kept,
            landmarks=(np.stack([lm for c in chunks for lm in c.landmarks]) if kept
                       else np.zeros((0, N_LANDMARKS, 3), np.float32)),
            boxes=np.array([b for c in chunks for b in c.boxes]).reshape(-1, 3),
            dropped=[i for c in chunks for i in c.dropped],
            interpolated=[i for c in chunks for i in c.interpolated],
            second_face_ratios=[r for c in chunks for r in c.ratios],
            face_switches=sum(c.switches for c in chunks),
            resumed_from=self.resumed_from,
        )

    def close(self) -> None:
        self.pool.shutdown(wait=True)


def stream_video(job: _Run, width: int, height: int) -> StreamResult:
    """One pass over job.video: tracked landmarks, final boxes, and crops/masks on disk."""
    config = job.config
    work = job.out_dir / WORK_DIR
    _prepare_work_dir(job, work)
    state = _Stream(job, width, height, work)
    tracker = open_tracker(config.parallel_tracking, work / "tracker.log", config.fan_weights)
    in_flight = 0
    frame_count = state.resumed_from
    try:
        for index, frame in job.frames_in_chunks(skip=state.resumed_from):
            tracker.submit(state.region_request(index, frame))
            in_flight += 1
            frame_count = index + 1
            while (result := tracker.next_result(block=in_flight >= config.max_in_flight)):
                in_flight -= 1
                state.take_result(result)
            if index % config.chunk_frames == 0:
                state.checkpoint(None)
                job.progress("track", index / job.expected_frames, f"frame {index}")
                job.early_checks(state.ratios, state.face_heights)
        while in_flight:
            result = tracker.next_result(block=True)
            assert result is not None
            in_flight -= 1
            state.take_result(result)
        state.finish(frame_count)
    finally:
        tracker.close()
        state.close()
    return state.result(frame_count)


def _prepare_work_dir(job: _Run, work: Path) -> None:
    """Keep the work folder (and written crops) only if it belongs to this video and config."""
    stat = job.video.stat()
    fingerprint = {"video": job.video.name, "bytes": stat.st_size, "mtime_ns": stat.st_mtime_ns,
                   "config": asdict(job.config)}
    digest = hashlib.sha256(json.dumps(fingerprint, sort_keys=True).encode()).hexdigest()
    marker = work / "run.json"
    if marker.is_file() and json.loads(marker.read_text()).get("digest") == digest:
        return
    shutil.rmtree(work, ignore_errors=True)
    for folder in ("images", "masks", "semantic"):
        shutil.rmtree(job.out_dir / folder / job.config.person, ignore_errors=True)
    work.mkdir(parents=True)
    for folder in ("images", "masks", "semantic"):
        (job.out_dir / folder / job.config.person).mkdir(parents=True, exist_ok=True)
    marker.write_text(json.dumps({"digest": digest, **fingerprint}))


def _save_chunk(path: Path, chunk: _Chunk) -> None:
    tmp = path.with_suffix(".tmp.npz")
    np.savez(
        tmp, kept=np.array(chunk.kept, np.int64),
        landmarks=(np.stack(chunk.landmarks) if chunk.landmarks
                   else np.zeros((0, N_LANDMARKS, 3), np.float32)),
        boxes=np.array(chunk.boxes).reshape(-1, 3), dropped=np.array(chunk.dropped, np.int64),
        interpolated=np.array(chunk.interpolated, np.int64),
        ratios=np.array(chunk.ratios, np.float64), switches=np.array(chunk.switches),
    )
    tmp.replace(path)


def _anchor_of(landmarks: np.ndarray) -> Anchor:
    points = landmarks[:, :2]
    centre = (points.min(axis=0) + points.max(axis=0)) / 2
    return Anchor(float(centre[0]), float(centre[1]), max(face_height(landmarks), 8.0))


def _resized(pixels: np.ndarray, scale: float) -> np.ndarray:
    if scale >= 1.0:
        return pixels
    height, width = pixels.shape[:2]
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    return cv2.resize(pixels, size, interpolation=cv2.INTER_AREA)
