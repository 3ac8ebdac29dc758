"""Object storage: one protocol, a local-directory and an S3/MinIO implementation."""

from __future__ import annotations

from functools import lru_cache

from facespeech.config import Settings, get_settings
from facespeech.storage.base import (
    ChecksumMismatch,
    InvalidKey,
    InvalidToken,
    ObjectNotFound,
    ObjectStore,
    PresignedPost,
    StoredObject,
    TooLarge,
    content_disposition,
    validate_key,
)
from facespeech.storage.local import LocalStore, verify_download_token, verify_upload_token

__all__ = [
    "ChecksumMismatch",
    "InvalidKey",
    "InvalidToken",
    "LocalStore",
    "ObjectNotFound",
    "ObjectStore",
    "PresignedPost",
    "StoredObject",
    "TooLarge",
    "content_disposition",
    "get_store",
    "validate_key",
    "verify_download_token",
    "verify_upload_token",
]


def get_store(settings: Settings | None = None) -> ObjectStore:
    """The store Settings choose; without arguments, one shared instance per process."""
    if settings is None:
        return _default_store()
    if settings.store_backend == "s3":
        # Imported here so the embedded default never needs minio's client at import time.
        from facespeech.storage.s3 import S3Store

        return S3Store(
            endpoint=settings.s3_endpoint,
            access_key=settings.s3_access_key,
            secret_key=settings.s3_secret_key,
            bucket=settings.s3_bucket,
            secure=settings.s3_secure,
            region=settings.s3_region,
        )
    return LocalStore(settings.store_root, settings.secret_key, settings.public_url)


@lru_cache(maxsize=1)
def _default_store() -> ObjectStore:
    return get_store(get_settings())
