"""Settings and report of one preprocessing run."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class PreprocessConfig:
    image_size: int = 512  # side of the square aligned crops (512 default, 1024 allowed)
    jpeg_quality: int = 95
    # While the face's place is unknown, FaceMesh searches a copy of the whole frame this size.
    track_max_side: int = 640
    # Once found, it tracks in a square region this many face heights wide around the face
    # (at most track_region_side px); the same region, at full resolution, is all that is kept
    # of the frame until its crop is cut. It must hold the crop (crop_scale) plus head motion.
    region_face_heights: float = 3.4
    track_region_side: int = 384
    recentre_fraction: float = 0.2  # move the region when the face drifts this far (heights)
    parallel_tracking: bool = True  # track in a second process while this one decodes
    max_in_flight: int = 8  # frames sent to the tracker and not yet answered
    check_every: int = 25  # every this many frames: count faces, sample the background
    check_max_side: int = 960  # whole-frame copy for those checks and the background plate
    segment: bool = True  # person/background masks (semantic/ folder) and background plate
    # Segment every this many frames; those between reuse the last mask (people move slowly
    # next to 40 ms, and segmentation is half of the tracking process's time).
    segment_every: int = 2
    plate_samples: int = 40  # frames the background plate is the median of (at most)
    # face-alignment (2D-FAN TorchScript) weights: adds 68 landmarks per frame
    # (metadata/landmarks68.json); None: MediaPipe's 478 only
    fan_weights: str | None = None
    # BFM09_model_info.mat: fit the Basel Face Model to the landmarks (metadata/bfm/*.npz)
    bfm_model: str | None = None
    write_threads: int = 2  # JPEG/PNG encoding threads
    checkpoint_frames: int = 250  # a restarted run continues from the last finished chunk
    # The crop is this many face heights (forehead landmark to chin) wide: head top + neck.
    crop_scale: float = 2.0
    # Shift of the crop centre below the face centre, in face heights: more neck than hair.
    crop_shift_down: float = 0.1
    # Zero-phase Gaussian smoothing of the crop box (frames): no lag, unlike causal filters.
    smooth_center_sigma: float = 2.0
    smooth_size_sigma: float = 6.0
    max_gap_frames: int = 5  # face missing for at most this many frames: interpolate
    min_face_px: int = 96  # median face height in the source video: fail below
    warn_face_px: int = 128  # warn below: crops are upscaled and soft
    min_seconds: float = 8.0  # of usable frames: fail below
    # Warn below: held-out face PSNR grew ~0.8 dB per doubling of training video from 7 to
    # 29 s on obama (docs/QUALITY.md, session 6) and peers train on 3-5 minutes.
    warn_seconds: float = 120.0
    # One-Euro filter on landmarks (Casiez et al. 2012), run forward and backward: no lag.
    landmark_min_cutoff_hz: float = 1.5
    landmark_beta: float = 0.5
    min_fps: float = 20.0
    # A second face at least this fraction of the main face's size makes the video ambiguous.
    similar_face_ratio: float = 0.75
    min_audio_rms: float = 1e-3  # -60 dBFS: below it the audio counts as silent
    max_av_mismatch_s: float = 1.0
    held_out_fraction: float = 0.1
    expression_dims: int = 16
    lip_dims: int = 8  # lip-shape components per frame (expressions.json "lips")
    mask_dilate_fraction: float = 0.03  # of image_size
    chunk_frames: int = 64  # progress and stop checks happen between chunks
    contact_sheet_frames: int = 12
    person: str = "p0"
    clip: str = "clip"
    # Archive import limits (decompression bombs, zip slip).
    archive_max_members: int = 200_000
    archive_max_bytes: int = 20 * 1024**3
    archive_max_ratio: float = 200.0


@dataclass
class Check:
    name: str  # e.g. "face_size", "usable_length"
    status: str  # "pass", "warn" or "fail"
    detail: str  # what was measured against which limit


@dataclass
class PreprocessReport:
    frames: int  # frames written (after dropping)
    fps_in: float
    duration_s: float
    dropped_frames: list[int] = field(default_factory=list)
    face_size_px: float = 0.0  # median face height in the source video
    warnings: list[str] = field(default_factory=list)
    seconds_taken: float = 0.0
    stage_seconds: dict[str, float] = field(default_factory=dict)
    interpolated_frames: list[int] = field(default_factory=list)  # filled from neighbours
    checks: list[Check] = field(default_factory=list)
    # frame-to-frame landmark motion after pose removal on the stillest 2 s, in thousandths
    # of the face height: {"raw": ..., "smoothed": ..., "segment_start_frame": ...}
    landmark_jitter: dict[str, float] = field(default_factory=dict)
    background_unseen_fraction: float | None = None  # plate pixels never seen, inpainted
    files: list[str] = field(default_factory=list)  # report artifacts in the dataset dir
    resumed_from_frame: int = 0  # 0: a fresh run; else the frame a restarted run went on from
