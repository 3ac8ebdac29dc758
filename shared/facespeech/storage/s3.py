"""The object store on S3/MinIO through the `minio` client.

Streams are uploaded to a staging key under `.staging/` and then copied server-side to the
final key with the sha256 in the object metadata: the digest is known only once the last
byte is read, while S3 takes metadata at the start of an upload. The final key therefore
appears complete or not at all, and a failed or oversized upload leaves nothing behind.
"""

from __future__ import annotations

import hashlib
import io
import os
import tempfile
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, BinaryIO, TypeVar

import urllib3
from minio import Minio
from minio.commonconfig import REPLACE, CopySource
from minio.datatypes import PostPolicy
from minio.deleteobjects import DeleteObject
from minio.error import S3Error, ServerError
from tenacity import (
    retry,
    retry_if_exception,
    stop_after_attempt,
    wait_exponential,
)

from facespeech.storage.base import (
    CHUNK_SIZE,
    DEFAULT_CONTENT_TYPE,
    ChecksumMismatch,
    ObjectNotFound,
    PresignedPost,
    StoredObject,
    TooLarge,
    content_disposition,
    validate_key,
    validate_prefix,
)

# Parts of 16 MiB keep memory bounded (minio buffers one part per upload thread) while
# allowing objects up to 160 GiB within S3's 10,000-part limit.
PART_SIZE = 16 * 1024 * 1024
STAGING_PREFIX = ".staging/"
SHA256_META = "x-amz-meta-sha256"
_TRANSIENT_S3_CODES = {"InternalError", "RequestTimeout", "ServiceUnavailable", "SlowDown"}

T = TypeVar("T")


def _is_transient(exc: BaseException) -> bool:
    """Network trouble and 5xx are worth retrying; 4xx (NoSuchKey, AccessDenied) are not."""
    if isinstance(exc, S3Error):
        return exc.code in _TRANSIENT_S3_CODES
    # A checksum mismatch is usually a transfer cut short; a second read tells.
    transient = (ServerError, urllib3.exceptions.HTTPError, ConnectionError, ChecksumMismatch)
    return isinstance(exc, transient)


_retry_transient = retry(
    retry=retry_if_exception(_is_transient),
    stop=stop_after_attempt(4),
    wait=wait_exponential(multiplier=0.2, max=5),
    reraise=True,
)


def _retried(func: Callable[[], T]) -> T:
    return _retry_transient(func)()


class _HashingReader:
    """Wraps a stream: hashes and counts what minio reads, and stops it past max_bytes."""

    def __init__(self, stream: BinaryIO, key: str, max_bytes: int | None) -> None:
        self._stream = stream
        self._key = key
        self._max_bytes = max_bytes
        self.size = 0
        self.digest = hashlib.sha256()

    def read(self, size: int = -1) -> bytes:
        chunk = self._stream.read(size)
        self.size += len(chunk)
        if self._max_bytes is not None and self.size > self._max_bytes:
            raise TooLarge(self._key, self._max_bytes)
        self.digest.update(chunk)
        return chunk


class S3Store:
    def __init__(
        self,
        endpoint: str,
        access_key: str,
        secret_key: str,
        bucket: str,
        secure: bool = False,
        region: str = "us-east-1",
    ) -> None:
        self.bucket = bucket
        self.endpoint = endpoint
        self.secure = secure
        self.client = Minio(
            endpoint, access_key=access_key, secret_key=secret_key, secure=secure, region=region
        )
        _retried(self._ensure_bucket)

    def _ensure_bucket(self) -> None:
        if self.client.bucket_exists(self.bucket):
            return
        try:
            self.client.make_bucket(self.bucket)
        except S3Error as exc:
            # Another process created it between our check and our request: that is fine.
            if exc.code not in ("BucketAlreadyOwnedByYou", "BucketAlreadyExists"):
                raise

    # -- writes ------------------------------------------------------------------------------

    def put_file(
        self, key: str, path: Path, content_type: str = DEFAULT_CONTENT_TYPE
    ) -> StoredObject:
        def attempt() -> StoredObject:
            with open(path, "rb") as stream:
                return self.put_stream(key, stream, content_type)

        return _retried(attempt)

    def put_bytes(
        self, key: str, data: bytes, content_type: str = DEFAULT_CONTENT_TYPE
    ) -> StoredObject:
        return _retried(lambda: self.put_stream(key, io.BytesIO(data), content_type))

    def put_stream(
        self,
        key: str,
        stream: BinaryIO,
        content_type: str = DEFAULT_CONTENT_TYPE,
        max_bytes: int | None = None,
    ) -> StoredObject:
        """Not retried here: a stream cannot be rewound. put_file/put_bytes retry whole."""
        validate_key(key)
        reader = _HashingReader(stream, key, max_bytes)
        staging_key = f"{STAGING_PREFIX}{uuid.uuid4().hex}"
        try:
            # minio aborts its multipart upload itself when reading the stream raises.
            self.client.put_object(
                self.bucket,
                staging_key,
                reader,  # type: ignore[arg-type]  # minio only calls read()
                length=-1,
                part_size=PART_SIZE,
                content_type=content_type,
            )
            stored = StoredObject(key, reader.size, reader.digest.hexdigest(), content_type)
            _retried(lambda: self._copy_with_metadata(staging_key, stored))
            return stored
        finally:
            _retried(lambda: self.client.remove_object(self.bucket, staging_key))

    def _copy_with_metadata(self, staging_key: str, stored: StoredObject) -> None:
        self.client.copy_object(
            self.bucket,
            stored.key,
            CopySource(self.bucket, staging_key),
            metadata={"Content-Type": stored.content_type, SHA256_META: stored.sha256},
            metadata_directive=REPLACE,
        )

    def delete(self, key: str) -> None:
        validate_key(key)
        _retried(lambda: self.client.remove_object(self.bucket, key))

    def delete_prefix(self, prefix: str) -> int:
        keys = self.list(prefix)
        if not keys:
            return 0
        errors = _retried(
            lambda: list(
                self.client.remove_objects(self.bucket, (DeleteObject(key) for key in keys))
            )
        )
        if errors:
            raise RuntimeError(f"could not delete {len(errors)} objects under {prefix!r}")
        return len(keys)

    def purge_partial_uploads(self, older_than_s: float) -> int:
        """Remove staging objects a crashed or cut-off upload left; the number removed."""
        cutoff = datetime.now(UTC) - timedelta(seconds=older_than_s)
        staged = _retried(
            lambda: list(
                self.client.list_objects(self.bucket, prefix=STAGING_PREFIX, recursive=True)
            )
        )
        stale = [
            obj.object_name
            for obj in staged
            if obj.object_name and obj.last_modified and obj.last_modified < cutoff
        ]
        for key in stale:
            self.delete(key)
        return len(stale)

    # -- reads -------------------------------------------------------------------------------

    def get_file(self, key: str, path: Path) -> Path:
        validate_key(key)
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)

        def download() -> None:
            # Write beside the target, then rename: a reader never sees half a file.
            fd, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
            try:
                response = self._open(key)
                expected = response.headers.get(SHA256_META, "")
                digest = hashlib.sha256()
                with os.fdopen(fd, "wb") as out:
                    for chunk in _drain(response, CHUNK_SIZE):
                        digest.update(chunk)
                        out.write(chunk)
                # Objects from a presigned POST carry no digest: nothing to compare with.
                if expected and digest.hexdigest() != expected:
                    raise ChecksumMismatch(key, expected, digest.hexdigest())
                os.replace(tmp_name, path)
            finally:
                Path(tmp_name).unlink(missing_ok=True)

        _retried(download)
        return path

    def get_bytes(self, key: str) -> bytes:
        validate_key(key)
        return _retried(lambda: b"".join(self._stream_object(key, CHUNK_SIZE)))

    def iter_chunks(self, key: str, chunk_size: int = CHUNK_SIZE) -> Iterator[bytes]:
        validate_key(key)
        # Open the response here, not lazily, so a missing key fails at the call.
        response = _retried(lambda: self._open(key))
        return _drain(response, chunk_size)

    def exists(self, key: str) -> bool:
        try:
            self.stat(key)
        except ObjectNotFound:
            return False
        return True

    def size(self, key: str) -> int:
        return self.stat(key).size

    def stat(self, key: str) -> StoredObject:
        validate_key(key)
        info = _retried(lambda: self._stat_object(key))
        metadata = info.metadata or {}
        return StoredObject(
            key=key,
            size=int(info.size or 0),
            # Objects uploaded through a presigned POST carry no digest: empty means unknown.
            sha256=metadata.get(SHA256_META, ""),
            content_type=info.content_type or DEFAULT_CONTENT_TYPE,
        )

    def list(self, prefix: str) -> list[str]:
        validate_prefix(prefix)
        objects = _retried(
            lambda: list(self.client.list_objects(self.bucket, prefix=prefix, recursive=True))
        )
        keys = (obj.object_name for obj in objects if obj.object_name)
        return sorted(key for key in keys if not key.startswith(STAGING_PREFIX))

    def _open(self, key: str) -> Any:
        try:
            return self.client.get_object(self.bucket, key)
        except S3Error as exc:
            _raise_if_not_found(exc, key)
            raise

    def _stat_object(self, key: str) -> Any:
        try:
            return self.client.stat_object(self.bucket, key)
        except S3Error as exc:
            _raise_if_not_found(exc, key)
            raise

    def _stream_object(self, key: str, chunk_size: int) -> Iterator[bytes]:
        yield from _drain(self._open(key), chunk_size)

    # -- presigned URLs ----------------------------------------------------------------------

    def presigned_get(self, key: str, expires_s: int, filename: str | None = None) -> str:
        validate_key(key)
        headers = (
            {"response-content-disposition": content_disposition(filename)} if filename else None
        )
        return self.client.presigned_get_object(
            self.bucket,
            key,
            expires=timedelta(seconds=expires_s),
            response_headers=headers,  # type: ignore[arg-type]
        )

    def presigned_post(self, key: str, expires_s: int, max_bytes: int) -> PresignedPost:
        """A form upload the server itself refuses past max_bytes (a presigned PUT cannot)."""
        validate_key(key)
        policy = PostPolicy(self.bucket, datetime.now(UTC) + timedelta(seconds=expires_s))
        policy.add_equals_condition("key", key)
        policy.add_content_length_range_condition(0, max_bytes)
        fields = self.client.presigned_post_policy(policy)
        fields["key"] = key
        scheme = "https" if self.secure else "http"
        return PresignedPost(
            url=f"{scheme}://{self.endpoint}/{self.bucket}", fields=fields, max_bytes=max_bytes
        )


def _raise_if_not_found(exc: S3Error, key: str) -> None:
    if exc.code in ("NoSuchKey", "NoSuchObject", "NotFound"):
        raise ObjectNotFound(key) from exc


def _drain(response: Any, chunk_size: int) -> Iterator[bytes]:
    try:
        yield from response.stream(chunk_size)
    finally:
        response.close()
        response.release_conn()
