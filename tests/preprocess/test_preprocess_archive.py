"""import_archive: a dataset archive comes back complete; hostile archives are refused."""

from __future__ import annotations

import io
import json
import shutil
import tarfile
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from facespeech import dataset
from facespeech.errors import InputError
from facespeech.preprocess import import_archive
from facespeech.preprocess.audio_features import SILENCE, frame_windows, log_mel
from tests.preprocess.conftest import TAKES


def _zip_dataset(root: Path, archive: Path, skip: tuple[str, ...] = ()) -> Path:
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as zipped:
        for path in sorted(root.rglob("*")):
            relative = path.relative_to(root).as_posix()
            if path.is_file() and not relative.startswith(skip):
                zipped.write(path, f"dataset/{relative}")
    return archive


def test_archive_round_trip_fills_masks_features_and_split(aoc_run: tuple, tmp_path: Path) -> None:
    archive = _zip_dataset(aoc_run[0], tmp_path / "ds.zip",
                           skip=("masks", "features", "metadata/split.json", "semantic"))
    report = import_archive(archive, tmp_path / "out")
    (track,) = dataset.read_tracks(tmp_path / "out")
    assert report.frames == len(track.poses) == 200
    assert all(dataset.mask_path(tmp_path / "out", "p0", p.frame).is_file() for p in track.poses)
    assert dataset.features_path(tmp_path / "out", "p0", "clip").is_file()
    assert len(track.held_out_frames) == 20
    made = np.array(Image.open(dataset.semantic_path(tmp_path / "out", "p0", 100)))
    shipped = np.array(Image.open(dataset.semantic_path(aoc_run[0], "p0", 100)))
    assert np.mean(made == shipped) > 0.9  # segmenting the crop agrees with the pipeline


def test_missing_images_are_refused(aoc_run: tuple, tmp_path: Path) -> None:
    copy = tmp_path / "copy"
    shutil.copytree(aoc_run[0], copy)
    dataset.image_path(copy, "p0", 7).unlink()
    with pytest.raises(InputError, match="missing"):
        import_archive(_zip_dataset(copy, tmp_path / "ds.zip"), tmp_path / "out")


def test_wrong_layout_is_refused(tmp_path: Path) -> None:
    archive = tmp_path / "photos.zip"
    with zipfile.ZipFile(archive, "w") as zipped:
        zipped.writestr("holiday/img1.jpg", b"\xff\xd8 not really")
    with pytest.raises(InputError, match="info.json"):
        import_archive(archive, tmp_path / "out")


def test_zip_slip_is_refused(tmp_path: Path) -> None:
    archive = tmp_path / "slip.zip"
    with zipfile.ZipFile(archive, "w") as zipped:
        zipped.writestr("../../etc/evil.txt", b"x")
    with pytest.raises(InputError, match="outside"):
        import_archive(archive, tmp_path / "out")
    assert not (tmp_path.parent / "etc").exists()


def test_tar_symlink_is_refused(tmp_path: Path) -> None:
    archive = tmp_path / "link.tar.gz"
    with tarfile.open(archive, "w:gz") as tarred:
        link = tarfile.TarInfo("metadata/info.json")
        link.type, link.linkname = tarfile.SYMTYPE, "/etc/passwd"
        tarred.addfile(link)
    with pytest.raises(InputError, match="link"):
        import_archive(archive, tmp_path / "out")


def test_decompression_bomb_is_refused(tmp_path: Path) -> None:
    archive = tmp_path / "bomb.tar.gz"
    zeros = 200 * 1024 * 1024
    with tarfile.open(archive, "w:gz") as tarred:
        member = tarfile.TarInfo("features/zeros.bin")
        member.size = zeros
        tarred.addfile(member, _ZeroReader(zeros))
    with pytest.raises(InputError, match="bomb"):
        import_archive(archive, tmp_path / "out")


class _ZeroReader(io.RawIOBase):
    def __init__(self, size: int) -> None:
        self.left = size

    def read(self, n: int = -1) -> bytes:
        n = self.left if n < 0 else min(n, self.left)
        self.left -= n
        return bytes(n)


def test_frame_windows_are_centred_and_padded_with_silence() -> None:
    mel = np.arange(40, dtype=np.float32)[:, None].repeat(80, axis=1)  # 0.4 s of "audio"
    windows = frame_windows(mel, n_frames=10, fps=25, window=16)
    assert windows.shape == (10, 16, 80)
    # Frame 2 is centred at 0.1 s = mel frame 10: window holds mel frames 2..17.
    assert windows[2, :, 0].tolist() == list(range(2, 18))
    assert windows[0, 0, 0] == np.float32(SILENCE) == windows[9, -1, 0]


def test_log_mel_shape_and_silence_floor() -> None:
    mel = log_mel(np.zeros(16_000, np.float32))
    assert mel.shape == (101, 80) and mel.dtype == np.float32
    assert np.allclose(mel, SILENCE)


def _add_second_person(root: Path, name: str = "p1") -> None:
    """Make `root` a two-person dataset: a copy of p0 as `name` (its own images and audio)."""
    for folder in ("images", "audio"):
        shutil.copytree(root / folder / "p0", root / folder / name)
    meta = root / "metadata"
    info = json.loads((meta / "info.json").read_text())
    info["persons"].append(name)
    info["clips"][name] = info["clips"]["p0"]
    (meta / "info.json").write_text(json.dumps(info))
    for file in ("poses.json", "expressions.json", "landmarks.json"):
        payload = json.loads((meta / file).read_text())
        payload[name] = payload["p0"]
        (meta / file).write_text(json.dumps(payload))


def test_two_person_archive_is_validated_and_completed(aoc_run: tuple, tmp_path: Path) -> None:
    copy = tmp_path / "copy"
    shutil.copytree(aoc_run[0], copy)
    _add_second_person(copy)
    archive = _zip_dataset(copy, tmp_path / "two.zip",
                           skip=("masks", "features", "metadata/split.json", "semantic"))
    report = import_archive(archive, tmp_path / "out")
    tracks = dataset.read_tracks(tmp_path / "out")
    assert [t.person for t in tracks] == ["p0", "p1"] and report.frames == 400
    for track in tracks:
        assert len(track.held_out_frames) == 20
        assert dataset.features_path(tmp_path / "out", track.person, "clip").is_file()
        assert dataset.mask_path(tmp_path / "out", track.person, track.poses[-1].frame).is_file()


def test_second_person_without_images_is_refused_by_name(aoc_run: tuple, tmp_path: Path) -> None:
    copy = tmp_path / "copy"
    shutil.copytree(aoc_run[0], copy)
    _add_second_person(copy, "guest")
    shutil.rmtree(copy / "images" / "guest")
    with pytest.raises(InputError, match="person guest: 200 images"):
        import_archive(_zip_dataset(copy, tmp_path / "ds.zip"), tmp_path / "out")


def test_an_archive_of_takes_is_preprocessed_as_one_joined_clip(
    two_takes: tuple[Path, Path], tmp_path: Path
) -> None:
    quiet, loud = two_takes
    archive = tmp_path / "takes.zip"
    with zipfile.ZipFile(archive, "w") as zipped:
        zipped.write(loud, "person/take2.mp4")  # name order, not archive order, decides
        zipped.write(quiet, "person/take1.mp4")
    report = import_archive(archive, tmp_path / "out", TAKES)
    info = dataset.read_info(tmp_path / "out")
    (track,) = dataset.read_tracks(tmp_path / "out")
    assert info.source == "take1.mp4 + take2.mp4" and info.segments == {"p0": [1, 101]}
    assert min(track.held_out_frames) >= 101 and report.frames == len(track.poses)
    assert not (tmp_path / "out" / ".extracting").exists()


def test_an_archive_of_a_video_and_something_else_is_refused(
    two_takes: tuple[Path, Path], tmp_path: Path
) -> None:
    archive = tmp_path / "mixed.zip"
    with zipfile.ZipFile(archive, "w") as zipped:
        zipped.write(two_takes[0], "take1.mp4")
        zipped.writestr("notes.txt", "hello")
    with pytest.raises(InputError, match="hold only videos"):
        import_archive(archive, tmp_path / "out", TAKES)


def test_an_archive_of_too_many_takes_is_refused(
    two_takes: tuple[Path, Path], tmp_path: Path
) -> None:
    archive = tmp_path / "many.zip"
    with zipfile.ZipFile(archive, "w") as zipped:
        for number in range(21):
            zipped.write(two_takes[0], f"take{number:02d}.mp4")
    with pytest.raises(InputError, match="at most 20 takes"):
        import_archive(archive, tmp_path / "out", TAKES)
