"""Check a dataset archive's member list without extracting it (stdlib only: the API runs
this on every archive upload, before a worker sees it)."""

from __future__ import annotations

import lzma
import tarfile
import zipfile
import zlib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import IO

from facespeech.errors import InputError
from facespeech.preprocess.config import PreprocessConfig

ReadMember = Callable[[str], IO[bytes]]
# what a broken or truncated (compressed) tar raises besides TarError; gzip's and bz2's own
# errors are OSErrors
_DAMAGED = (tarfile.TarError, OSError, EOFError, zlib.error, lzma.LZMAError)


@dataclass
class Member:
    name: str
    size: int  # uncompressed size as the archive declares it
    is_dir: bool


def inspect_archive(
    archive: Path, config: PreprocessConfig = PreprocessConfig(),  # noqa: B008 - frozen
) -> None:
    """Check an uploaded archive without extracting it: a zip's or tar's member list against
    the limits (count, unpacked size, ratio, names, links). InputError says what is wrong.

    Cheap enough for an API request: a zip's directory is at its end, and a tar is read only
    until its declared sizes pass the limit, so a compressed bomb is not unpacked to find out.
    """
    with open_archive(archive, config):
        pass


def _tar_members(archive: Path, tarred: tarfile.TarFile,
                 config: PreprocessConfig) -> list[tarfile.TarInfo]:
    """The tar's members, read one header at a time; stop at the first one over a limit
    (reading a compressed tar's headers means unpacking the data between them)."""
    infos: list[tarfile.TarInfo] = []
    total = 0
    largest = min(config.archive_max_bytes, config.archive_max_ratio * archive.stat().st_size)
    try:
        for info in tarred:
            if not (info.isfile() or info.isdir()):
                kind = "link" if info.issym() or info.islnk() else "special file"
                raise InputError(f"{archive.name}: member {info.name!r} is a {kind}; "
                                 "only plain files and folders are accepted")
            infos.append(info)
            total += info.size
            if len(infos) > config.archive_max_members or total > largest:
                break  # check_members names the limit
    except _DAMAGED as error:
        raise InputError(f"{archive.name}: the tar archive is damaged ({error})") from error
    return infos


@contextmanager
def open_archive(
    archive: Path, config: PreprocessConfig
) -> Iterator[tuple[list[Member], ReadMember]]:
    """(members, read_member(name) -> binary file) for a zip or a (compressed) tar whose
    member list passed check_members."""
    if zipfile.is_zipfile(archive):
        try:
            zipped = zipfile.ZipFile(archive)
        except (zipfile.BadZipFile, OSError) as error:
            raise InputError(f"{archive.name}: the zip archive is damaged ({error})") from error
        with zipped:
            _check_zip_links(archive, zipped)
            members = [Member(i.filename, i.file_size, i.is_dir()) for i in zipped.infolist()]
            check_members(archive, members, config)
            yield members, zipped.open
        return
    try:
        tarred = tarfile.open(archive, mode="r:*")
    except _DAMAGED as error:
        raise InputError(f"{archive.name}: not a zip or tar archive ({error})") from error
    with tarred:
        infos = _tar_members(archive, tarred, config)
        members = [Member(i.name, i.size, i.isdir()) for i in infos]
        check_members(archive, members, config)

        def read_member(name: str) -> IO[bytes]:
            handle = tarred.extractfile(name)
            assert handle is not None  # only regular files reach here
            return handle

        yield members, read_member


def _check_zip_links(archive: Path, zipped: zipfile.ZipFile) -> None:
    for info in zipped.infolist():
        if info.external_attr >> 16 & 0o170000 == 0o120000:  # S_IFLNK in the unix mode
            raise InputError(f"{archive.name}: member {info.filename!r} is a symbolic link")


def check_members(archive: Path, members: list[Member], config: PreprocessConfig) -> None:
    if len(members) > config.archive_max_members:
        raise InputError(f"{archive.name}: {len(members)} members, more than the limit of "
                         f"{config.archive_max_members}")
    total = sum(m.size for m in members)
    if total > config.archive_max_bytes:
        raise InputError(f"{archive.name}: unpacks to {total / 1e9:.1f} GB, more than the "
                         f"limit of {config.archive_max_bytes / 1e9:.1f} GB")
    ratio = total / max(archive.stat().st_size, 1)
    if ratio > config.archive_max_ratio:
        raise InputError(f"{archive.name}: unpacks to {ratio:.0f} times its size; refusing a "
                         f"likely decompression bomb (limit {config.archive_max_ratio:g}x)")
    for member in members:
        _check_name(archive, member.name)


def _check_name(archive: Path, name: str) -> None:
    path = PurePosixPath(name.replace("\\", "/"))
    if path.is_absolute() or ".." in path.parts or (path.parts and ":" in path.parts[0]):
        raise InputError(f"{archive.name}: member {name!r} would be written outside the "
                         "dataset folder")
