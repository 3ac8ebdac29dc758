"""Several videos of one person joined into one dataset (preprocess.join, run(extra_videos))."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from PIL import Image

from facespeech import dataset
from facespeech.errors import InputError
from facespeech.media import iter_video_frames, probe
from facespeech.preprocess import run
from facespeech.preprocess.audio_features import speech_rms
from facespeech.preprocess.join import join_videos, letterbox
from tests.conftest import shared_file
from tests.preprocess.conftest import TAKES, aoc_frames_and_audio, write_video


def test_join_letterboxes_into_the_last_video_and_levels_the_voices(
    two_takes: tuple[Path, Path], tmp_path: Path
) -> None:
    quiet, loud = two_takes
    joined = join_videos([quiet, loud], tmp_path)
    frames = list(iter_video_frames(joined.video))
    assert frames[0].shape == (256, 256, 3)  # the main (last) video's size
    assert joined.segment_starts == [1, 101] and len(frames) == 100 + 100
    # the 4:3 take keeps its shape: black bars above and below, picture in the middle
    first = frames[0].astype(int)
    assert first[:25].max() < 20 and first[-25:].max() < 20 and first[100:150].mean() > 40
    wave, rate = sf.read(joined.audio)
    assert rate == 16_000 and len(wave) == len(frames) * 640  # sound starts with its frames
    levels = [speech_rms(wave[: 100 * 640], rate), speech_rms(wave[100 * 640 :], rate)]
    assert levels[0] == pytest.approx(levels[1], rel=0.25)  # the quiet take was raised
    again = join_videos([quiet, loud], tmp_path)  # a resumed run reuses the finished join
    assert again == joined and joined.video.stat().st_mtime_ns == again.video.stat().st_mtime_ns


def test_letterbox_keeps_the_aspect_ratio() -> None:
    tall = np.full((200, 100, 3), 255, dtype=np.uint8)
    boxed = letterbox(tall, 300, 300)
    assert boxed.shape == (300, 300, 3)
    columns = np.flatnonzero(boxed[150, :, 0] > 128)
    assert columns[0] == 75 and columns[-1] == 224  # 150 px wide, centred


def test_a_joined_dataset_holds_out_only_the_main_videos_tail(
    two_takes: tuple[Path, Path], tmp_path: Path
) -> None:
    quiet, loud = two_takes
    report = run(loud, tmp_path, TAKES, extra_videos=[quiet])
    info = dataset.read_info(tmp_path)
    (track,) = dataset.read_tracks(tmp_path)
    assert info.segments == {"p0": [1, 101]} and track.segment_starts == [1, 101]
    assert info.source == "quiet_wide.mp4 + loud_square.mp4"
    main_frames = [p.frame for p in track.poses if p.frame >= 101]
    assert track.held_out_frames == main_frames[-round(0.1 * len(main_frames)):]
    assert min(track.train_frames) < 101 and report.frames == len(track.poses)
    assert len(track.poses) > 190  # both takes were tracked
    assert not (tmp_path / ".join").exists() and not (tmp_path / ".work").exists()
    wave, _ = sf.read(dataset.audio_path(tmp_path, "p0", "clip"))
    assert abs(len(wave) / 16_000 - 200 / 25) < 0.05


def test_single_video_datasets_say_they_are_one_segment(
    aoc_run: tuple[Path, object, list]
) -> None:
    root = aoc_run[0]
    assert dataset.read_info(root).segments == {"p0": [1]}
    assert dataset.read_tracks(root)[0].segment_starts == [1]


def test_joining_refuses_a_separate_audio_file_and_a_silent_take(
    two_takes: tuple[Path, Path], tmp_path: Path
) -> None:
    quiet, loud = two_takes
    with pytest.raises(InputError, match="separate audio file"):
        run(loud, tmp_path / "a", TAKES, audio=shared_file("audio/en_radio31.wav"),
            extra_videos=[quiet])
    frames = list(iter_video_frames(quiet))
    mute = write_video(tmp_path / "mute.mp4", frames, None)
    assert not probe(mute).has_audio
    with pytest.raises(InputError, match="mute.mp4: no audio track"):
        run(loud, tmp_path / "b", TAKES, extra_videos=[mute])


def test_each_take_is_tracked_and_framed_on_its_own(tmp_path: Path) -> None:
    """The face is on the left of one take and on the right of the next: the second take's
    first frames are found where they are (no interpolation from the first take, no crop cut
    from around the first take's face), and no crop box is blended across the cut."""
    frames, audio = aoc_frames_and_audio(8.0)

    def placed(frame: np.ndarray, left: bool) -> np.ndarray:
        canvas = np.full((256, 768, 3), 90, dtype=np.uint8)
        x = 0 if left else 512
        canvas[:, x:x + 256] = frame
        return canvas
    first = write_video(tmp_path / "left.mp4", [placed(f, True) for f in frames[:100]],
                        audio[: 100 * 640])
    second = write_video(tmp_path / "right.mp4", [placed(f, False) for f in frames[100:200]],
                         audio[100 * 640:])
    out = tmp_path / "out"
    run(second, out, TAKES, extra_videos=[first])
    (track,) = dataset.read_tracks(out)
    second_take = [p for p in track.poses if p.frame >= 101]
    assert [p.frame for p in second_take] == list(range(101, 201))  # none dropped
    centres = np.array([p.crop_box[0] + p.crop_box[2] / 2 for p in track.poses])
    assert (centres[:100] < 256).all() and (centres[100:] > 512).all()
    sides = np.array([p.crop_box[2] for p in second_take])
    assert sides[:3].min() > 0.9 * np.median(sides)  # the first boxes owe nothing to take one
    crop = np.asarray(Image.open(dataset.image_path(out, "p0", 101)).convert("L"), dtype=float)
    assert crop.mean(axis=0).min() > 20 and crop.mean(axis=1).min() > 20  # no black border
