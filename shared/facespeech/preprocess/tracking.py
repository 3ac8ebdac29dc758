"""Face landmarks per frame with MediaPipe FaceMesh, and the choice of one face to follow."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from facespeech.errors import InputError

N_LANDMARKS = 478  # FaceMesh with refine_landmarks: 468 mesh points + 10 iris points
FOREHEAD, CHIN = 10, 152


class FaceTracker:
    """FaceMesh in video mode (tracks between frames, detects when it loses the face)."""

    def __init__(self, max_faces: int = 2) -> None:
        # imported here: importing a finished dataset archive (a GPU worker without
        # MediaPipe) uses this module's geometry helpers, not the tracker
        import mediapipe as mp

        self._mesh = mp.solutions.face_mesh.FaceMesh(
            static_image_mode=False,
            max_num_faces=max_faces,
            refine_landmarks=True,
            min_detection_confidence=0.5,
            min_tracking_confidence=0.5,
        )

    def faces(self, rgb: np.ndarray, source_size: tuple[int, int]) -> list[np.ndarray]:
        """Landmarks of every face in `rgb`, each (478, 3) in source-video pixels.

        `rgb` may be a downscaled copy; FaceMesh returns coordinates normalised to the
        image, so multiplying by the source size maps them back. z uses the width scale.
        """
        result = self._mesh.process(rgb)
        if not result.multi_face_landmarks:
            return []
        width, height = source_size
        scale = np.array([width, height, width], dtype=np.float32)
        return [
            np.array([(p.x, p.y, p.z) for p in face.landmark], dtype=np.float32) * scale
            for face in result.multi_face_landmarks
        ]

    def close(self) -> None:
        self._mesh.close()

    def __enter__(self) -> FaceTracker:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()


def face_height(landmarks: np.ndarray) -> float:
    """Forehead-to-chin distance: stable under yaw, unlike the width."""
    return float(np.linalg.norm(landmarks[FOREHEAD, :2] - landmarks[CHIN, :2]))


@dataclass
class FaceChoice:
    landmarks: list[np.ndarray | None]  # per frame: the followed face, or None
    second_face_ratio: float  # median size of the other face over the main one (0: none)


def choose_main_face(per_frame_faces: list[list[np.ndarray]]) -> FaceChoice:
    """Follow the largest face, frame to frame, by nearness to where it was last seen.

    Picking the largest face anew in each frame would swap persons when sizes cross; so the
    first pick is the largest face, and later frames take the face nearest to the last pick.
    """
    chosen: list[np.ndarray | None] = []
    ratios: list[float] = []
    last_centre: np.ndarray | None = None
    for faces in per_frame_faces:
        if not faces:
            chosen.append(None)
            continue
        if last_centre is None:
            main = max(faces, key=face_height)
        else:
            main = min(faces, key=lambda f: float(np.linalg.norm(_centre(f) - last_centre)))
        last_centre = _centre(main)
        chosen.append(main)
        others = [face_height(f) for f in faces if f is not main]
        ratios.append(max(others) / max(face_height(main), 1e-6) if others else 0.0)
    return FaceChoice(chosen, float(np.median(ratios)) if ratios else 0.0)


def _centre(landmarks: np.ndarray) -> np.ndarray:
    return landmarks[:, :2].mean(axis=0)


def fill_short_gaps(
    landmarks: list[np.ndarray | None], max_gap: int
) -> tuple[list[np.ndarray | None], list[int]]:
    """Interpolate gaps of at most `max_gap` frames between two tracked frames.

    Returns the filled list and the 0-based indices of frames still without a face (longer
    gaps, and missing frames at the start or end, where there is nothing to interpolate to).
    """
    filled = list(landmarks)
    known = [i for i, lm in enumerate(landmarks) if lm is not None]
    if not known:
        raise InputError("no face found in any frame of the video")
    for left, right in zip(known, known[1:], strict=False):
        gap = right - left - 1
        if 0 < gap <= max_gap:
            for i in range(left + 1, right):
                weight = (i - left) / (right - left)
                filled[i] = (1 - weight) * landmarks[left] + weight * landmarks[right]
    missing = [i for i, lm in enumerate(filled) if lm is None]
    return filled, missing


class GapFiller:
    """fill_short_gaps for a stream: frames go in one by one and come out, in order, once
    their fate is known: (index, landmarks, interpolated) with None for a dropped frame.

    A missing frame waits until the face comes back (within `max_gap` frames: interpolated)
    or the gap grows too long (dropped, and so is the rest of that gap).
    """

    def __init__(self, max_gap: int, start: int = 0,
                 last_known: tuple[int, np.ndarray] | None = None) -> None:
        self.max_gap = max_gap
        self.next_index = start
        self.last_known = last_known
        self.waiting: list[int] = []

    def push(self, landmarks: np.ndarray | None) -> list[tuple[int, np.ndarray | None, bool]]:
        index = self.next_index
        self.next_index += 1
        if landmarks is None:
            if self.last_known is None:
                return [(index, None, False)]
            self.waiting.append(index)
            if len(self.waiting) <= self.max_gap:
                return []
            out: list[tuple[int, np.ndarray | None, bool]] = [(i, None, False)
                                                              for i in self.waiting]
            self.waiting, self.last_known = [], None
            return out
        out = []
        if self.waiting and self.last_known is not None:
            left, left_landmarks = self.last_known
            for i in self.waiting:
                weight = (i - left) / (index - left)
                out.append((i, (1 - weight) * left_landmarks + weight * landmarks, True))
        self.waiting = []
        self.last_known = (index, landmarks)
        out.append((index, landmarks, False))
        return out

    def finish(self) -> list[tuple[int, np.ndarray | None, bool]]:
        """Frames still waiting at the end of the video: nothing to interpolate towards."""
        out: list[tuple[int, np.ndarray | None, bool]] = [(i, None, False) for i in self.waiting]
        self.waiting = []
        return out
