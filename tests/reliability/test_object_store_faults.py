"""The object store failing and slow: a TCP proxy in front of a real S3 server (moto) cuts
every third connection mid-transfer and delays the rest. Uploads and downloads retry with
backoff and arrive intact; no staging object is left behind; a corrupted object is refused."""

from __future__ import annotations

import hashlib
import os
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from facespeech.storage import ChecksumMismatch, LocalStore
from facespeech.storage.s3 import STAGING_PREFIX, S3Store
from tests.conftest import free_port


class FlakyProxy:
    """Forwards 127.0.0.1:port to upstream; every `cut_every`-th connection is dropped after
    `cut_after` bytes of the request; every chunk is delayed by `delay_s`."""

    def __init__(
        self,
        upstream: tuple[str, int],
        cut_every: int = 3,
        cut_after: int = 32_768,
        delay_s: float = 0.002,
    ) -> None:
        self.upstream, self.cut_every, self.cut_after, self.delay_s = (
            upstream,
            cut_every,
            cut_after,
            delay_s,
        )
        self.port = free_port()
        self.connections = 0
        self.cut = 0
        self._listener = socket.create_server(("127.0.0.1", self.port))
        self._closed = False
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while not self._closed:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            self.connections += 1
            doomed = self.connections % self.cut_every == 0
            threading.Thread(target=self._serve, args=(client, doomed), daemon=True).start()

    def _serve(self, client: socket.socket, doomed: bool) -> None:
        upstream = socket.create_connection(self.upstream)
        threading.Thread(target=self._pipe, args=(upstream, client, False), daemon=True).start()
        self._pipe(client, upstream, doomed)

    def _pipe(self, source: socket.socket, sink: socket.socket, doomed: bool) -> None:
        sent = 0
        try:
            while chunk := source.recv(65_536):
                if doomed and sent + len(chunk) > self.cut_after:
                    self.cut += 1
                    break
                time.sleep(self.delay_s)
                sink.sendall(chunk)
                sent += len(chunk)
        except OSError:
            pass
        for end in (source, sink):
            try:
                end.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            end.close()

    def close(self) -> None:
        self._closed = True
        self._listener.close()


@pytest.fixture
def flaky_s3(moto_endpoint: str) -> Iterator[tuple[S3Store, FlakyProxy]]:
    host, port = moto_endpoint.split(":")
    proxy = FlakyProxy((host, int(port)))
    bucket = f"flaky-{uuid.uuid4().hex[:10]}"
    store = None
    for _ in range(5):  # even creating the bucket may meet a cut connection
        try:
            store = S3Store(f"127.0.0.1:{proxy.port}", "testing", "testing", bucket)
            break
        except Exception:  # noqa: BLE001
            continue
    assert store is not None
    yield store, proxy
    proxy.close()


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_uploads_and_downloads_survive_a_flaky_slow_store(
    flaky_s3: tuple[S3Store, FlakyProxy], tmp_path: Path
) -> None:
    store, proxy = flaky_s3
    source = tmp_path / "blob.bin"
    source.write_bytes(os.urandom(6 * 1024 * 1024))
    for index in range(4):
        stored = store.put_file(f"tenants/t/jobs/j/blob-{index}.bin", source)
        assert stored.sha256 == _sha256(source)
        fetched = store.get_file(stored.key, tmp_path / f"back-{index}.bin")
        assert _sha256(fetched) == stored.sha256
    assert proxy.cut >= 2, "the proxy never cut a transfer: the test proved nothing"
    leftovers = list(store.client.list_objects(store.bucket, prefix=STAGING_PREFIX, recursive=True))
    assert leftovers == []
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")], "partial downloads"


def test_a_corrupted_s3_object_is_refused(moto_endpoint: str, tmp_path: Path) -> None:
    import io

    store = S3Store(moto_endpoint, "testing", "testing", f"bad-{uuid.uuid4().hex[:10]}")
    stored = store.put_bytes("tenants/t/model.pt", b"the real weights")
    # Bit rot or a tampered object: other bytes under the same key and recorded digest.
    store.client.put_object(
        store.bucket,
        stored.key,
        io.BytesIO(b"something else!!"),
        16,
        metadata={"sha256": stored.sha256},
    )
    with pytest.raises(ChecksumMismatch):
        store.get_file(stored.key, tmp_path / "model.pt")
    assert list(tmp_path.iterdir()) == []


def test_a_corrupted_local_object_is_refused(tmp_path: Path) -> None:
    store = LocalStore(tmp_path / "objects", "secret", "http://testserver")
    stored = store.put_bytes("tenants/t/model.pt", b"the real weights")
    (tmp_path / "objects" / "data" / stored.key).write_bytes(b"something else!!")
    with pytest.raises(ChecksumMismatch):
        store.get_file(stored.key, tmp_path / "out" / "model.pt")
    assert list((tmp_path / "out").iterdir()) == []


def test_partial_uploads_left_by_a_crash_are_purged(moto_endpoint: str, tmp_path: Path) -> None:
    import io

    s3 = S3Store(moto_endpoint, "testing", "testing", f"purge-{uuid.uuid4().hex[:10]}")
    kept = s3.put_bytes("tenants/t/kept.bin", b"kept")
    s3.client.put_object(s3.bucket, f"{STAGING_PREFIX}crashed", io.BytesIO(b"half"), 4)
    assert s3.purge_partial_uploads(older_than_s=3600) == 0  # a live upload is left alone
    time.sleep(1.1)
    assert s3.purge_partial_uploads(older_than_s=1) == 1
    assert s3.list("tenants/") == [kept.key]
    local = LocalStore(tmp_path / "objects", "secret", "http://testserver")
    (tmp_path / "objects" / "tmp" / "put-crashed").write_bytes(b"half")
    local.put_bytes("tenants/t/kept.bin", b"kept")
    assert local.purge_partial_uploads(older_than_s=3600) == 0
    assert local.purge_partial_uploads(older_than_s=0) == 1
    assert local.list("tenants/") == ["tenants/t/kept.bin"]
