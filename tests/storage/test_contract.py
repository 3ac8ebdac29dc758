"""The ObjectStore contract: every implementation behaves the same on these."""

from __future__ import annotations

import hashlib
import io
from pathlib import Path

import pytest

from facespeech.storage import InvalidKey, ObjectNotFound, ObjectStore, TooLarge

HOSTILE_KEYS = [
    "",
    "/etc/passwd",
    "../outside",
    "a/../../outside",
    "a/./b",
    "a//b",
    "a/",
    "a\\b",
    "a\x00b",
    "a\nb",
    "x" * 1025,
    "a/" + "y" * 256,
]


def test_put_get_roundtrip_reports_size_sha256_and_type(store: ObjectStore) -> None:
    data = b"hello facespeech" * 1000
    stored = store.put_bytes("runs/r1/report.json", data, "application/json")

    assert stored.size == len(data)
    assert stored.sha256 == hashlib.sha256(data).hexdigest()
    assert store.get_bytes("runs/r1/report.json") == data
    assert store.size("runs/r1/report.json") == len(data)
    assert store.exists("runs/r1/report.json")
    assert store.stat("runs/r1/report.json") == stored


def test_put_stream_hashes_while_streaming(store: ObjectStore) -> None:
    data = bytes(range(256)) * 20_000  # 5 MB, several chunks
    stored = store.put_stream("datasets/d1/video.mp4", io.BytesIO(data), "video/mp4")

    assert stored.sha256 == hashlib.sha256(data).hexdigest()
    assert stored.content_type == "video/mp4"
    assert b"".join(store.iter_chunks("datasets/d1/video.mp4", 65536)) == data


def test_put_stream_over_the_limit_stores_nothing(store: ObjectStore) -> None:
    with pytest.raises(TooLarge, match="1000 bytes"):
        store.put_stream("uploads/big.bin", io.BytesIO(b"x" * 1001), max_bytes=1000)

    assert not store.exists("uploads/big.bin")
    assert store.list("") == []


def test_put_stream_at_the_limit_is_accepted(store: ObjectStore) -> None:
    assert store.put_stream("uploads/ok.bin", io.BytesIO(b"x" * 1000), max_bytes=1000).size == 1000


def test_overwrite_replaces_content_and_metadata(store: ObjectStore) -> None:
    store.put_bytes("a/b.txt", b"first", "text/plain")
    second = store.put_bytes("a/b.txt", b"second!", "application/octet-stream")

    assert store.get_bytes("a/b.txt") == b"second!"
    assert store.stat("a/b.txt") == second


def test_put_file_and_get_file(store: ObjectStore, tmp_path: Path) -> None:
    source = tmp_path / "in.bin"
    source.write_bytes(b"\x00\x01" * 50_000)
    store.put_file("ckpt/step-000000001.pt", source)

    target = store.get_file("ckpt/step-000000001.pt", tmp_path / "out" / "copy.bin")

    assert target.read_bytes() == source.read_bytes()
    assert sorted(p.name for p in target.parent.iterdir()) == ["copy.bin"]  # no temp left


def test_missing_key_raises_object_not_found(store: ObjectStore, tmp_path: Path) -> None:
    assert not store.exists("nope/missing")
    with pytest.raises(ObjectNotFound):
        store.get_bytes("nope/missing")
    with pytest.raises(ObjectNotFound):
        store.iter_chunks("nope/missing")
    with pytest.raises(ObjectNotFound):
        store.size("nope/missing")
    with pytest.raises(ObjectNotFound):
        store.get_file("nope/missing", tmp_path / "x")
    assert not (tmp_path / "x").exists()


@pytest.mark.parametrize("key", HOSTILE_KEYS)
def test_hostile_keys_are_rejected(store: ObjectStore, key: str) -> None:
    with pytest.raises(InvalidKey):
        store.put_bytes(key, b"x")
    with pytest.raises(InvalidKey):
        store.get_bytes(key)
    with pytest.raises(InvalidKey):
        store.presigned_get(key, 60)


def test_list_and_delete_prefix(store: ObjectStore) -> None:
    for key in ["t1/jobs/a.txt", "t1/jobs/b/c.txt", "t1/other.txt", "t2/jobs/a.txt"]:
        store.put_bytes(key, key.encode())

    assert store.list("t1/jobs/") == ["t1/jobs/a.txt", "t1/jobs/b/c.txt"]
    assert store.list("t1/") == ["t1/jobs/a.txt", "t1/jobs/b/c.txt", "t1/other.txt"]
    assert store.list("t1/o") == ["t1/other.txt"]
    assert store.list("none/") == []

    assert store.delete_prefix("t1/jobs/") == 2
    assert store.list("") == ["t1/other.txt", "t2/jobs/a.txt"]
    assert store.delete_prefix("t1/jobs/") == 0


def test_delete_is_idempotent(store: ObjectStore) -> None:
    store.put_bytes("x/y.txt", b"y")
    store.delete("x/y.txt")
    store.delete("x/y.txt")
    assert not store.exists("x/y.txt")
    # The freed name can be reused as a prefix and as a key.
    store.put_bytes("x", b"now a key")
    assert store.get_bytes("x") == b"now a key"
