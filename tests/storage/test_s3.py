"""The S3 store against a real S3-protocol server (moto in server mode)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import io
import json

import boto3
import httpx
import pytest
from minio.error import S3Error

from facespeech.config import Settings
from facespeech.storage import ObjectNotFound, TooLarge, get_store
from facespeech.storage.s3 import PART_SIZE, SHA256_META, S3Store, _is_transient


def _boto(store: S3Store) -> object:
    return boto3.client(
        "s3",
        endpoint_url=f"http://{store.endpoint}",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
        region_name="us-east-1",
    )


def test_sha256_is_stored_in_object_metadata(s3_store: S3Store) -> None:
    data = b"frame" * 1000
    s3_store.put_bytes("m/x.bin", data, "application/x-test")

    info = s3_store.client.stat_object(s3_store.bucket, "m/x.bin")

    assert info.metadata[SHA256_META] == hashlib.sha256(data).hexdigest()
    assert info.content_type == "application/x-test"


def test_multipart_stream_is_hashed_and_staging_cleaned(s3_store: S3Store) -> None:
    data = bytes(range(256)) * ((PART_SIZE + 3 * 1024 * 1024) // 256)  # two parts
    stored = s3_store.put_stream("big/video.mp4", io.BytesIO(data), "video/mp4")

    assert stored.size == len(data)
    assert stored.sha256 == hashlib.sha256(data).hexdigest()
    assert s3_store.stat("big/video.mp4").sha256 == stored.sha256
    everything = s3_store.client.list_objects(s3_store.bucket, recursive=True)
    assert [obj.object_name for obj in everything] == ["big/video.mp4"]


def test_multipart_over_limit_leaves_no_object_and_no_upload(s3_store: S3Store) -> None:
    data = b"z" * (PART_SIZE * 2 + 10)

    with pytest.raises(TooLarge):
        s3_store.put_stream("big/too.bin", io.BytesIO(data), max_bytes=PART_SIZE + 100)

    assert list(s3_store.client.list_objects(s3_store.bucket, recursive=True)) == []
    uploads = _boto(s3_store).list_multipart_uploads(Bucket=s3_store.bucket)  # type: ignore[attr-defined]
    assert uploads.get("Uploads", []) == []


def test_presigned_get_serves_the_bytes_with_filename(s3_store: S3Store) -> None:
    data = b"\x00mp4 bytes\xff" * 100
    s3_store.put_bytes("renders/j1/out.mp4", data, "video/mp4")

    response = httpx.get(s3_store.presigned_get("renders/j1/out.mp4", 60, filename="talk é.mp4"))

    assert response.status_code == 200
    assert response.content == data
    disposition = response.headers["content-disposition"]
    assert 'filename="talk _.mp4"' in disposition
    assert "filename*=UTF-8''talk%20%C3%A9.mp4" in disposition


def _policy_conditions(fields: dict[str, str]) -> list[object]:
    """The conditions of a POST policy, after checking its SigV4 signature with the secret.

    moto accepts any POST form without evaluating the policy, so the limit is checked here
    in the document that S3 and MinIO do evaluate, and its signature proves they would
    accept it as ours.
    """
    _, date, region, service, _ = fields["x-amz-credential"].split("/")
    key = b"AWS4testing"
    for part in (date, region, service, "aws4_request"):
        key = hmac.new(key, part.encode(), hashlib.sha256).digest()
    expected = hmac.new(key, fields["policy"].encode(), hashlib.sha256).hexdigest()
    assert fields["x-amz-signature"] == expected
    conditions: list[object] = json.loads(base64.b64decode(fields["policy"]))["conditions"]
    return conditions


def test_presigned_post_policy_limits_size_and_key(s3_store: S3Store) -> None:
    post = s3_store.presigned_post("datasets/d1/source.mp4", 60, max_bytes=1000)

    conditions = _policy_conditions(post.fields)

    assert ["content-length-range", 0, 1000] in conditions
    assert ["eq", "$key", "datasets/d1/source.mp4"] in conditions
    assert post.fields["key"] == "datasets/d1/source.mp4"
    assert post.max_bytes == 1000


def test_presigned_post_upload_lands_in_the_store(s3_store: S3Store) -> None:
    post = s3_store.presigned_post("datasets/d1/source.mp4", 60, max_bytes=1000)

    response = httpx.post(post.url, data=post.fields, files={"file": ("v.mp4", b"y" * 1000)})

    assert response.status_code in (200, 201, 204), response.text
    assert s3_store.get_bytes("datasets/d1/source.mp4") == b"y" * 1000
    # Uploaded by a client, not by us: no digest recorded, and the stat says so.
    assert s3_store.stat("datasets/d1/source.mp4").sha256 == ""


def test_bucket_creation_is_idempotent(s3_store: S3Store, moto_endpoint: str) -> None:
    s3_store.put_bytes("keep.txt", b"kept")
    again = S3Store(moto_endpoint, "testing", "testing", s3_store.bucket)

    assert again.get_bytes("keep.txt") == b"kept"


def test_get_store_picks_the_s3_backend(moto_endpoint: str) -> None:
    settings = Settings(store_backend="s3", s3_endpoint=moto_endpoint, s3_bucket="from-settings")
    store = get_store(settings)

    assert isinstance(store, S3Store)
    assert store.client.bucket_exists("from-settings")


def test_only_transient_errors_are_retried() -> None:
    def s3_error(code: str) -> S3Error:
        return S3Error(code, code, "r", "h", "b", None)  # type: ignore[arg-type]

    assert _is_transient(s3_error("SlowDown"))
    assert _is_transient(ConnectionResetError())
    assert not _is_transient(s3_error("NoSuchKey"))
    assert not _is_transient(s3_error("AccessDenied"))
    assert not _is_transient(ObjectNotFound("k"))
    assert not _is_transient(TooLarge("k", 1))
