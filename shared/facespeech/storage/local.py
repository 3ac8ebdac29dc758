"""The object store as a local directory: the embedded default, with the semantics of S3.

Layout under root: `data/<key>` holds the bytes, `meta/<key>.json` the size, sha256 and
content type, `tmp/` the partial writes. Keeping metadata and temp files in their own trees
means no key can ever collide with them or see them in a listing.

Presigned URLs point at the API (`/v1/files/{token}`, `/v1/uploads/{token}`), which checks
the HMAC-signed token with `verify_download_token` / `verify_upload_token` and serves or
accepts the bytes through this store.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import io
import json
import os
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, BinaryIO

from facespeech.storage.base import (
    CHUNK_SIZE,
    DEFAULT_CONTENT_TYPE,
    ChecksumMismatch,
    InvalidKey,
    InvalidToken,
    ObjectNotFound,
    PresignedPost,
    StoredObject,
    TooLarge,
    validate_key,
    validate_prefix,
)

_DOWNLOAD = "download"
_UPLOAD = "upload"


class LocalStore:
    def __init__(self, root: Path, secret_key: str, public_url: str) -> None:
        self.root = Path(root).resolve()
        self.secret_key = secret_key
        self.public_url = public_url.rstrip("/")
        self._data = self.root / "data"
        self._meta = self.root / "meta"
        self._tmp = self.root / "tmp"
        for folder in (self._data, self._meta, self._tmp):
            folder.mkdir(parents=True, exist_ok=True)

    # -- paths -------------------------------------------------------------------------------

    def _data_path(self, key: str) -> Path:
        return _inside(self._data, validate_key(key))

    def _meta_path(self, key: str) -> Path:
        return _inside(self._meta, validate_key(key) + ".json")

    # -- writes ------------------------------------------------------------------------------

    def put_file(
        self, key: str, path: Path, content_type: str = DEFAULT_CONTENT_TYPE
    ) -> StoredObject:
        with open(path, "rb") as stream:
            return self.put_stream(key, stream, content_type)

    def put_bytes(
        self, key: str, data: bytes, content_type: str = DEFAULT_CONTENT_TYPE
    ) -> StoredObject:
        return self.put_stream(key, io.BytesIO(data), content_type)

    def put_stream(
        self,
        key: str,
        stream: BinaryIO,
        content_type: str = DEFAULT_CONTENT_TYPE,
        max_bytes: int | None = None,
    ) -> StoredObject:
        target = self._data_path(key)
        meta_target = self._meta_path(key)
        fd, tmp_name = tempfile.mkstemp(dir=self._tmp, prefix="put-")
        tmp_path = Path(tmp_name)
        try:
            with os.fdopen(fd, "wb") as out:
                size, sha256 = _copy_hashing(stream, out, key, max_bytes)
                out.flush()
                os.fsync(out.fileno())
            stored = StoredObject(key=key, size=size, sha256=sha256, content_type=content_type)
            self._publish(tmp_path, target, meta_target, stored)
            return stored
        finally:
            tmp_path.unlink(missing_ok=True)

    def _publish(
        self, tmp_path: Path, target: Path, meta_target: Path, stored: StoredObject
    ) -> None:
        # A concurrent delete may prune the parent folders we just made: make them again.
        for attempt in range(3):
            try:
                _make_parent(target, self._data, stored.key)
                _make_parent(meta_target, self._meta, stored.key)
                # Metadata first: a reader that finds the data file also finds its metadata.
                _write_json_atomic(meta_target, self._tmp, _meta_dict(stored))
                os.replace(tmp_path, target)
                return
            except FileNotFoundError:
                if attempt == 2:
                    raise

    def delete(self, key: str) -> None:
        self._data_path(key).unlink(missing_ok=True)
        self._meta_path(key).unlink(missing_ok=True)
        _prune_empty_parents(self._data_path(key).parent, self._data)
        _prune_empty_parents(self._meta_path(key).parent, self._meta)

    def delete_prefix(self, prefix: str) -> int:
        keys = self.list(prefix)
        for key in keys:
            self.delete(key)
        return len(keys)

    # -- reads -------------------------------------------------------------------------------

    def get_file(self, key: str, path: Path) -> Path:
        """Copy the object to path, verifying the sha256 recorded when it was stored."""
        source = self._existing(key)
        expected = self.stat(key).sha256
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        # Copy beside the target, then rename: a reader never sees half a file.
        fd, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
        try:
            with os.fdopen(fd, "wb") as out, open(source, "rb") as src:
                _, actual = _copy_hashing(src, out, key, None)
            if expected and actual != expected:
                raise ChecksumMismatch(key, expected, actual)
            os.replace(tmp_name, path)
        finally:
            Path(tmp_name).unlink(missing_ok=True)
        return path

    def get_bytes(self, key: str) -> bytes:
        return self._existing(key).read_bytes()

    def iter_chunks(self, key: str, chunk_size: int = CHUNK_SIZE) -> Iterator[bytes]:
        # Opened here, not in the generator, so a missing key fails at the call.
        handle = open(self._existing(key), "rb")  # closed by _read_chunks
        return _read_chunks(handle, chunk_size)

    def exists(self, key: str) -> bool:
        return self._data_path(key).is_file()

    def size(self, key: str) -> int:
        return self._existing(key).stat().st_size

    def stat(self, key: str) -> StoredObject:
        self._existing(key)
        meta = json.loads(self._meta_path(key).read_text())
        return StoredObject(
            key=key, size=meta["size"], sha256=meta["sha256"], content_type=meta["content_type"]
        )

    def list(self, prefix: str) -> list[str]:
        validate_prefix(prefix)
        # Walk only the deepest folder the prefix names, not the whole store.
        folder = _inside(self._data, prefix.rpartition("/")[0]) if "/" in prefix else self._data
        if not folder.is_dir():
            return []
        files = (path for path in folder.rglob("*") if path.is_file())
        keys = (path.relative_to(self._data).as_posix() for path in files)
        return sorted(key for key in keys if key.startswith(prefix))

    def purge_partial_uploads(self, older_than_s: float) -> int:
        """Remove temp files a crashed writer left in tmp/; the number removed."""
        cutoff = time.time() - older_than_s
        removed = 0
        for path in self._tmp.iterdir():
            try:
                if path.stat().st_mtime < cutoff:
                    path.unlink()
                    removed += 1
            except FileNotFoundError:  # published or removed meanwhile
                continue
        return removed

    def _existing(self, key: str) -> Path:
        path = self._data_path(key)
        if not path.is_file():
            raise ObjectNotFound(key)
        return path

    # -- presigned URLs ----------------------------------------------------------------------

    def presigned_get(self, key: str, expires_s: int, filename: str | None = None) -> str:
        validate_key(key)
        token = _sign(
            {"k": key, "f": filename, "e": time.time() + expires_s}, _DOWNLOAD, self.secret_key
        )
        return f"{self.public_url}/v1/files/{token}"

    def presigned_post(self, key: str, expires_s: int, max_bytes: int) -> PresignedPost:
        validate_key(key)
        token = _sign(
            {"k": key, "m": max_bytes, "e": time.time() + expires_s}, _UPLOAD, self.secret_key
        )
        return PresignedPost(
            url=f"{self.public_url}/v1/uploads/{token}", fields={}, max_bytes=max_bytes
        )


def verify_download_token(
    token: str, secret_key: str, now: float | None = None
) -> tuple[str, str | None]:
    """The (key, filename) a download token grants, or InvalidToken."""
    payload = _verify(token, _DOWNLOAD, secret_key, now)
    filename = payload.get("f")
    return validate_key(payload["k"]), filename if isinstance(filename, str) else None


def verify_upload_token(token: str, secret_key: str, now: float | None = None) -> tuple[str, int]:
    """The (key, max_bytes) an upload token grants, or InvalidToken."""
    payload = _verify(token, _UPLOAD, secret_key, now)
    return validate_key(payload["k"]), int(payload["m"])


# -- tokens: base64url(json payload) "." base64url(hmac-sha256(purpose, payload)) -------------


def _b64encode(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _b64decode(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _signature(body: str, purpose: str, secret_key: str) -> str:
    # The purpose is signed too, so a download token cannot be replayed as an upload token.
    message = f"{purpose}.{body}".encode("ascii")
    return _b64encode(hmac.new(secret_key.encode(), message, hashlib.sha256).digest())


def _sign(payload: dict[str, Any], purpose: str, secret_key: str) -> str:
    body = _b64encode(json.dumps(payload, separators=(",", ":")).encode())
    return f"{body}.{_signature(body, purpose, secret_key)}"


def _verify(token: str, purpose: str, secret_key: str, now: float | None) -> dict[str, Any]:
    body, _, signature = token.partition(".")
    expected = _signature(body, purpose, secret_key)
    if not signature or not hmac.compare_digest(signature, expected):
        raise InvalidToken(f"the {purpose} link is not valid (bad signature)")
    try:
        payload: dict[str, Any] = json.loads(_b64decode(body))
        expires_at = float(payload["e"])
    except (ValueError, KeyError, TypeError) as exc:
        raise InvalidToken(f"the {purpose} link is malformed") from exc
    if (time.time() if now is None else now) >= expires_at:
        raise InvalidToken(f"the {purpose} link has expired; ask for a new one")
    return payload


# -- file helpers ------------------------------------------------------------------------------


def _inside(base: Path, relative: str) -> Path:
    """base/relative, refusing anything that resolves outside base (e.g. through a symlink)."""
    path = (base / relative).resolve()
    if path != base and base not in path.parents:
        raise InvalidKey(f"object key {relative!r} resolves outside the store")
    return path


def _make_parent(path: Path, base: Path, key: str) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError) as exc:
        # S3 allows both "a" and "a/b"; a directory tree cannot. Refuse rather than corrupt.
        raise InvalidKey(f"object key {key!r} collides with an existing object") from exc
    if path.is_dir():
        raise InvalidKey(f"object key {key!r} is a prefix of existing objects")


def _copy_hashing(
    stream: BinaryIO, out: BinaryIO, key: str, max_bytes: int | None
) -> tuple[int, str]:
    digest = hashlib.sha256()
    size = 0
    while chunk := stream.read(CHUNK_SIZE):
        size += len(chunk)
        if max_bytes is not None and size > max_bytes:
            raise TooLarge(key, max_bytes)
        digest.update(chunk)
        out.write(chunk)
    return size, digest.hexdigest()


def _meta_dict(stored: StoredObject) -> dict[str, Any]:
    return {"size": stored.size, "sha256": stored.sha256, "content_type": stored.content_type}


def _write_json_atomic(path: Path, tmp_dir: Path, data: dict[str, Any]) -> None:
    fd, tmp_name = tempfile.mkstemp(dir=tmp_dir, prefix="meta-")
    try:
        with os.fdopen(fd, "w") as out:
            json.dump(data, out)
        os.replace(tmp_name, path)
    finally:
        Path(tmp_name).unlink(missing_ok=True)


def _read_chunks(handle: BinaryIO, chunk_size: int) -> Iterator[bytes]:
    with handle:
        while chunk := handle.read(chunk_size):
            yield chunk


def _prune_empty_parents(folder: Path, base: Path) -> None:
    while folder != base and base in folder.parents:
        try:
            folder.rmdir()
        except OSError:
            return  # not empty, or removed by a concurrent delete
        folder = folder.parent
