"""The tracking half of preprocessing, run in its own process so decoding and tracking overlap.

The main process decodes each frame once, cuts a region around the face (or sends the whole
frame, downscaled, while it does not know where the face is), and sends it here; this process
answers with the face's landmarks and a person mask of the region. Every `check` frame also
carries a downscaled whole frame: it is searched for all faces (to follow the largest one and
to refuse ambiguous videos) and segmented for the background plate.

The two ends talk over stdin/stdout with pickled dataclasses: a plain subprocess works under
any parent (a Celery prefork child is daemonic and may not fork multiprocessing children).
"""

from __future__ import annotations

import os
import pickle
import subprocess
import sys
import threading
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from queue import Queue
from typing import IO, Protocol

import cv2
import numpy as np

ZOOM_SIDE = 384  # side of the face square FaceMesh gets after a whole-frame search


@dataclass
class TrackRequest:
    index: int  # 0-based output frame
    region: np.ndarray  # RGB uint8, the face region (or whole frame), resized
    # region pixel -> source pixel: source = region_px / scale + origin
    origin: tuple[float, float]
    scale: float
    segment: bool = True  # also return a person mask of the region
    # 0: `region` is a face region, tracked as it is. Else the face's place is unknown:
    # `region` is the whole frame, searched at this size and then zoomed in on at full size
    search_side: int = 0
    check: np.ndarray | None = None  # downscaled whole frame: count faces, segment for plate
    check_scale: float = 1.0  # check pixel = source pixel * check_scale


@dataclass
class TrackResult:
    index: int
    # (478, 3) float32 in source pixels, followed by FAN's 68 points (z = 0) when the
    # face-alignment backend is on; None: no face
    landmarks: np.ndarray | None
    person: np.ndarray | None  # uint8 (h, w) person mask of the region, 255 = person
    faces: list[tuple[float, float, float, float]] | None  # check frame: x, y, w, h source px
    check_person: np.ndarray | None  # uint8 person mask of the check frame


class FrameTracker:
    """MediaPipe models behind one `handle(request)` call; lives wherever it is run."""

    def __init__(self, fan_weights: str | None = None) -> None:
        import mediapipe as mp  # only the process that tracks pays for importing it

        self._fan = None
        if fan_weights:
            from facespeech.preprocess.fan import FanLandmarker

            self._fan = FanLandmarker(Path(fan_weights))
        self._mesh = mp.solutions.face_mesh.FaceMesh(
            static_image_mode=False, max_num_faces=1, refine_landmarks=True,
            min_detection_confidence=0.5, min_tracking_confidence=0.5,
        )
        # The full-range detector finds faces up to ~5 m away: broadcast framing included.
        self._detector = mp.solutions.face_detection.FaceDetection(
            model_selection=1, min_detection_confidence=0.5
        )
        self._region_segmenter = mp.solutions.selfie_segmentation.SelfieSegmentation(
            model_selection=0  # general model, square input: matches the square region
        )
        self._frame_segmenter = mp.solutions.selfie_segmentation.SelfieSegmentation(
            model_selection=1  # landscape model for whole frames
        )

    def handle(self, request: TrackRequest) -> TrackResult:
        region = request.region
        if request.search_side:
            points, region = self._search(region, request.search_side)
        else:
            points = self._mesh_points(region)
        landmarks = None
        if points is not None:
            landmarks = points / request.scale + np.array([*request.origin, 0.0], np.float32)
        person = None
        if request.segment:
            person = _mask(self._region_segmenter.process(region).segmentation_mask)
        faces = check_person = None
        if request.check is not None:
            faces = self._faces(request.check, request.check_scale)
            check_person = _mask(self._frame_segmenter.process(request.check).segmentation_mask)
        return TrackResult(request.index, landmarks, person, faces, check_person)

    def _mesh_points(self, rgb: np.ndarray) -> np.ndarray | None:
        """(K, 3) landmarks in `rgb` pixels (z in the x scale), or None."""
        result = self._mesh.process(rgb)
        if not result.multi_face_landmarks:
            return None
        height, width = rgb.shape[:2]
        points = np.array(
            [(p.x, p.y, p.z) for p in result.multi_face_landmarks[0].landmark], np.float32
        ) * np.array([width, height, width], np.float32)
        if self._fan is not None:
            points = np.vstack([points, self._fan_points(rgb, points)])
        return points

    def _search(self, frame: np.ndarray, side: int) -> tuple[np.ndarray | None, np.ndarray]:
        """Find the largest face in a whole frame: (landmarks in frame px, the small copy).

        FaceMesh's own detector is short-range: it misses faces under ~15 % of the frame
        (broadcast framing). The full-range detector finds them on the small copy; FaceMesh
        then runs on a full-resolution square around the largest one.
        """
        shrink = min(1.0, side / max(frame.shape[:2]))
        small = _resized(frame, shrink)
        points = self._mesh_points(small)
        if points is not None:
            return points / shrink, small
        faces = self._faces(small, shrink)
        if not faces:
            return None, small
        x, y, width, height = max(faces, key=lambda f: f[3])
        half = 1.2 * max(width, height)
        x0, y0 = max(0, int(x + width / 2 - half)), max(0, int(y + height / 2 - half))
        x1 = min(frame.shape[1], int(x + width / 2 + half))
        y1 = min(frame.shape[0], int(y + height / 2 + half))
        zoom = min(1.0, ZOOM_SIDE / max(x1 - x0, y1 - y0, 1))
        points = self._mesh_points(_resized(np.ascontiguousarray(frame[y0:y1, x0:x1]), zoom))
        if points is None:
            return None, small
        return points / zoom + np.array([x0, y0, 0.0], np.float32), small

    def _fan_points(self, region: np.ndarray, mesh: np.ndarray) -> np.ndarray:
        assert self._fan is not None
        low, high = mesh[:, :2].min(axis=0), mesh[:, :2].max(axis=0)
        box = (float(low[0]), float(low[1]), float(high[0] - low[0]), float(high[1] - low[1]))
        points = self._fan.landmarks(region, box)
        return np.column_stack([points, np.zeros(len(points))]).astype(np.float32)

    def _faces(self, rgb: np.ndarray, scale: float) -> list[tuple[float, float, float, float]]:
        detections = self._detector.process(rgb).detections or []
        height, width = rgb.shape[:2]
        faces = []
        for detection in detections:
            box = detection.location_data.relative_bounding_box
            faces.append((box.xmin * width / scale, box.ymin * height / scale,
                          box.width * width / scale, box.height * height / scale))
        return faces

    def close(self) -> None:
        for model in (self._mesh, self._detector, self._region_segmenter,
                      self._frame_segmenter):
            model.close()


def _resized(pixels: np.ndarray, scale: float) -> np.ndarray:
    if scale >= 1.0:
        return pixels
    height, width = pixels.shape[:2]
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    return cv2.resize(pixels, size, interpolation=cv2.INTER_AREA)


def _mask(probability: np.ndarray) -> np.ndarray:
    return np.round(np.clip(probability, 0.0, 1.0) * 255).astype(np.uint8)


class Tracker(Protocol):
    def submit(self, request: TrackRequest) -> None: ...
    def next_result(self, block: bool) -> TrackResult | None: ...
    def close(self) -> None: ...


class InProcessTracker:
    """Tracks in the calling process: for one core, and for debugging."""

    def __init__(self, fan_weights: str | None = None) -> None:
        self._tracker = FrameTracker(fan_weights)
        self._done: deque[TrackResult] = deque()

    def submit(self, request: TrackRequest) -> None:
        self._done.append(self._tracker.handle(request))

    def next_result(self, block: bool) -> TrackResult | None:
        return self._done.popleft() if self._done else None

    def close(self) -> None:
        self._tracker.close()


class SubprocessTracker:
    """Tracks in a child process; results come back in request order.

    A reader thread drains the child's answers as they come, so the child never blocks on
    a full pipe while we are still writing frames to it.
    """

    def __init__(self, log_path: Path, fan_weights: str | None = None) -> None:
        log_path.parent.mkdir(parents=True, exist_ok=True)
        self._log = log_path.open("ab")
        self._child = subprocess.Popen(
            [sys.executable, "-m", "facespeech.preprocess.track_worker",
             *([fan_weights] if fan_weights else [])],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self._log,
        )
        self._log_path = log_path
        self._results: Queue[TrackResult | BaseException] = Queue()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self._child.stdout is not None
        try:
            while True:
                self._results.put(pickle.load(self._child.stdout))
        except EOFError:
            self._results.put(RuntimeError(
                f"the tracking process ended early (exit {self._child.wait()}); "
                f"see {self._log_path}"
            ))
        except BaseException as error:  # handed to the main thread, which raises it
            self._results.put(error)
            self._child.kill()  # a writer blocked on the child's full pipe gets an error

    def submit(self, request: TrackRequest) -> None:
        assert self._child.stdin is not None
        try:
            pickle.dump(request, self._child.stdin, protocol=pickle.HIGHEST_PROTOCOL)
            self._child.stdin.flush()
        except BrokenPipeError:
            result = self._results.get()  # the reader's account of why the child ended
            raise result if isinstance(result, BaseException) else RuntimeError(
                f"the tracking process ended; see {self._log_path}") from None

    def next_result(self, block: bool) -> TrackResult | None:
        if not block and self._results.empty():
            return None
        item = self._results.get()
        if isinstance(item, BaseException):
            raise item
        return item

    def close(self) -> None:
        if self._child.stdin is not None and not self._child.stdin.closed:
            try:
                self._child.stdin.close()
            except BrokenPipeError:
                pass
        try:
            self._child.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self._child.kill()
            self._child.wait()
        self._log.close()


def open_tracker(parallel: bool, log_path: Path, fan_weights: str | None = None) -> Tracker:
    if parallel:
        return SubprocessTracker(log_path, fan_weights)
    return InProcessTracker(fan_weights)


def serve(source: IO[bytes], sink: IO[bytes], fan_weights: str | None = None) -> None:
    """Answer requests from `source` until it closes."""
    tracker = FrameTracker(fan_weights)
    try:
        while True:
            try:
                request = pickle.load(source)
            except EOFError:
                return
            pickle.dump(tracker.handle(request), sink, protocol=pickle.HIGHEST_PROTOCOL)
            sink.flush()
    finally:
        tracker.close()


if __name__ == "__main__":
    # Answers go to a private copy of stdout; fd 1 then points at stderr, so nothing a
    # library prints can corrupt the stream of pickles.
    answers = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)
    # Import ourselves by name: pickled answers must name facespeech.preprocess.track_worker
    # classes, not __main__ ones, for the parent to load them.
    from facespeech.preprocess.track_worker import serve as serve_by_name

    serve_by_name(sys.stdin.buffer, answers, sys.argv[1] if len(sys.argv) > 1 else None)
