"""The ObjectStore protocol: one interface, a local-directory and an S3/MinIO implementation."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Protocol
from urllib.parse import quote

# S3's own limit on key length, in UTF-8 bytes.
MAX_KEY_BYTES = 1024
# NAME_MAX of common filesystems: the local store maps each key segment to a file name.
MAX_SEGMENT_BYTES = 255
DEFAULT_CONTENT_TYPE = "application/octet-stream"
CHUNK_SIZE = 1024 * 1024


class ObjectNotFound(KeyError):
    pass


class InvalidKey(ValueError):
    pass


class TooLarge(ValueError):
    """A stream grew past its limit; nothing was stored."""

    def __init__(self, key: str, max_bytes: int) -> None:
        super().__init__(f"upload to {key!r} exceeds the limit of {max_bytes} bytes")
        self.key = key
        self.max_bytes = max_bytes


class ChecksumMismatch(OSError):
    """Downloaded bytes do not hash to the sha256 recorded when the object was stored."""

    def __init__(self, key: str, expected: str, actual: str) -> None:
        super().__init__(f"{key!r}: sha256 {actual} does not match the stored {expected}")
        self.key, self.expected, self.actual = key, expected, actual


class InvalidToken(ValueError):
    """A signed download/upload token is malformed, tampered with or expired."""


def validate_key(key: str) -> str:
    """Return key if it is a safe relative path of '/'-separated segments, else InvalidKey.

    Both stores apply the same rules, so a key that works on one works on the other.
    """
    if not key:
        raise InvalidKey("object key is empty")
    if len(key.encode("utf-8")) > MAX_KEY_BYTES:
        raise InvalidKey(f"object key is longer than {MAX_KEY_BYTES} bytes")
    if key.startswith("/"):
        raise InvalidKey(f"object key {key!r} is absolute; keys are relative")
    if "\\" in key or any(ord(char) < 0x20 or ord(char) == 0x7F for char in key):
        raise InvalidKey(f"object key {key!r} contains a backslash or control character")
    for segment in key.split("/"):
        if segment in ("", ".", ".."):
            raise InvalidKey(f"object key {key!r} has an empty, '.' or '..' segment")
        if len(segment.encode("utf-8")) > MAX_SEGMENT_BYTES:
            raise InvalidKey(f"object key {key!r} has a segment over {MAX_SEGMENT_BYTES} bytes")
    return key


def validate_prefix(prefix: str) -> str:
    """A listing prefix: empty (everything) or a key, optionally ending in '/'."""
    if prefix:
        validate_key(prefix.removesuffix("/"))
    return prefix


def content_disposition(filename: str) -> str:
    """An attachment header that survives quotes and non-ASCII names (RFC 6266)."""
    ascii_name = filename.encode("ascii", "replace").decode().replace('"', "_").replace("?", "_")
    return f"attachment; filename=\"{ascii_name}\"; filename*=UTF-8''{quote(filename, safe='')}"


@dataclass(frozen=True)
class StoredObject:
    key: str
    size: int
    sha256: str
    content_type: str


@dataclass(frozen=True)
class PresignedPost:
    """A browser/form upload straight to the store, limited in size by the store itself."""

    url: str
    fields: dict[str, str]
    max_bytes: int


class ObjectStore(Protocol):
    def put_file(self, key: str, path: Path, content_type: str = ...) -> StoredObject: ...

    def put_stream(
        self, key: str, stream: BinaryIO, content_type: str = ..., max_bytes: int | None = None
    ) -> StoredObject: ...

    def put_bytes(self, key: str, data: bytes, content_type: str = ...) -> StoredObject: ...

    def get_file(self, key: str, path: Path) -> Path: ...

    def get_bytes(self, key: str) -> bytes: ...

    def iter_chunks(self, key: str, chunk_size: int = ...) -> Iterator[bytes]: ...

    def exists(self, key: str) -> bool: ...

    def size(self, key: str) -> int: ...

    def stat(self, key: str) -> StoredObject: ...

    def delete(self, key: str) -> None: ...

    def delete_prefix(self, prefix: str) -> int: ...

    def list(self, prefix: str) -> list[str]: ...

    def presigned_get(self, key: str, expires_s: int, filename: str | None = None) -> str: ...

    def presigned_post(self, key: str, expires_s: int, max_bytes: int) -> PresignedPost: ...

    def purge_partial_uploads(self, older_than_s: float) -> int: ...
