"""The local-directory store: path safety, atomic writes, signed links."""

from __future__ import annotations

import io
import time
from pathlib import Path

import pytest

from facespeech.config import Settings
from facespeech.storage import (
    InvalidKey,
    InvalidToken,
    LocalStore,
    TooLarge,
    get_store,
    verify_download_token,
    verify_upload_token,
)

SECRET = "test-secret"  # as in conftest.local_store


def _token(url: str, route: str) -> str:
    prefix = f"http://testserver/v1/{route}/"
    assert url.startswith(prefix)
    return url.removeprefix(prefix)


def test_files_stay_under_root_and_metadata_apart(local_store: LocalStore) -> None:
    local_store.put_bytes("a/b.json", b"{}", "application/json")
    files = sorted(p.relative_to(local_store.root).as_posix() for p in local_store.root.rglob("*"))

    assert "data/a/b.json" in files
    assert "meta/a/b.json.json" in files
    # A key named like a sidecar is just another key: metadata lives in its own tree.
    local_store.put_bytes("a/b.json.json", b"also data")
    assert local_store.list("a/") == ["a/b.json", "a/b.json.json"]


def test_symlink_escape_is_refused(local_store: LocalStore, tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (local_store.root / "data" / "link").symlink_to(outside, target_is_directory=True)

    with pytest.raises(InvalidKey, match="outside the store"):
        local_store.put_bytes("link/escaped.txt", b"x")
    assert list(outside.iterdir()) == []


def test_failed_stream_leaves_no_partial_file(local_store: LocalStore) -> None:
    class Broken(io.RawIOBase):
        def __init__(self) -> None:
            self.calls = 0

        def read(self, size: int = -1) -> bytes:
            self.calls += 1
            if self.calls > 2:
                raise ConnectionResetError("client went away")
            return b"x" * 1024

    with pytest.raises(ConnectionResetError):
        local_store.put_stream("up/broken.bin", Broken())

    assert not local_store.exists("up/broken.bin")
    assert list((local_store.root / "tmp").iterdir()) == []


def test_too_large_leaves_no_temp_file(local_store: LocalStore) -> None:
    with pytest.raises(TooLarge):
        local_store.put_stream("up/big.bin", io.BytesIO(b"x" * (3 * 1024 * 1024)), max_bytes=10)
    assert list((local_store.root / "tmp").iterdir()) == []


def test_key_colliding_with_a_prefix_is_refused(local_store: LocalStore) -> None:
    local_store.put_bytes("a/b", b"x")
    with pytest.raises(InvalidKey):
        local_store.put_bytes("a", b"y")
    with pytest.raises(InvalidKey):
        local_store.put_bytes("a/b/c", b"z")
    assert local_store.get_bytes("a/b") == b"x"


def test_download_token_round_trip(local_store: LocalStore) -> None:
    url = local_store.presigned_get("renders/j1/out.mp4", 60, filename="talk.mp4")

    key, filename = verify_download_token(_token(url, "files"), SECRET)

    assert (key, filename) == ("renders/j1/out.mp4", "talk.mp4")
    no_name = local_store.presigned_get("renders/j1/out.mp4", 60)
    assert verify_download_token(_token(no_name, "files"), SECRET) == ("renders/j1/out.mp4", None)


def test_download_token_expires(local_store: LocalStore) -> None:
    token = _token(local_store.presigned_get("k/v", 30), "files")

    assert verify_download_token(token, SECRET, now=time.time() + 29)[0] == "k/v"
    with pytest.raises(InvalidToken, match="expired"):
        verify_download_token(token, SECRET, now=time.time() + 31)


def test_tampered_or_foreign_tokens_are_refused(local_store: LocalStore) -> None:
    token = _token(local_store.presigned_get("tenant-a/secret.mp4", 60), "files")
    body, _, signature = token.partition(".")
    other_body = _token(local_store.presigned_get("tenant-b/secret.mp4", 60), "files")
    other_body = other_body.partition(".")[0]

    for bad in [f"{other_body}.{signature}", body, f"{body}.", "garbage", ""]:
        with pytest.raises(InvalidToken):
            verify_download_token(bad, SECRET)
    with pytest.raises(InvalidToken, match="signature"):
        verify_download_token(token, "another-secret")
    # A download link is not an upload link.
    with pytest.raises(InvalidToken):
        verify_upload_token(token, SECRET)


def test_upload_token_carries_the_limit(local_store: LocalStore) -> None:
    post = local_store.presigned_post("datasets/d1/source.mp4", 60, max_bytes=5000)

    assert post.max_bytes == 5000
    token = _token(post.url, "uploads")
    assert verify_upload_token(token, SECRET) == ("datasets/d1/source.mp4", 5000)
    with pytest.raises(InvalidToken, match="expired"):
        verify_upload_token(token, SECRET, now=time.time() + 61)
    with pytest.raises(InvalidToken):
        verify_download_token(token, SECRET)


def test_get_store_picks_the_local_backend(tmp_path: Path) -> None:
    store = get_store(Settings(data_dir=tmp_path, store_backend="local"))

    assert isinstance(store, LocalStore)
    assert store.root == (tmp_path / "objects").resolve()
