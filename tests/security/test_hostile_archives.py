"""Hostile dataset archives: refused at upload with a 422 that says why (nothing stored), and
an archive that passes the upload check but not the layout check fails its job in a real
worker process, which lives on and writes nothing outside its folders."""

from __future__ import annotations

import io
import random
import tarfile
import zipfile
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient

from tests.conftest import free_port
from tests.reliability.conftest import cluster_env, start_cluster, start_training, stop_cluster

PROBLEM = "application/problem+json"


def _zip(path: Path, members: dict[str, bytes]) -> Path:
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return path


def _tar(path: Path, add: Callable[[tarfile.TarFile], None]) -> Path:
    with tarfile.open(path, "w") as archive:
        add(archive)
    return path


def _link(kind: bytes, name: str, target: str) -> Callable[[tarfile.TarFile], None]:
    def add(archive: tarfile.TarFile) -> None:
        info = tarfile.TarInfo(name)
        info.type, info.linkname = kind, target
        archive.addfile(info)
        data = b"pwned"
        file_info = tarfile.TarInfo("images/person/00001.jpg")
        file_info.size = len(data)
        archive.addfile(file_info, io.BytesIO(data))

    return add


def _corpus(folder: Path, escape: Path) -> dict[str, tuple[Path, str]]:
    """name -> (archive, a word the failure reason must contain)."""
    return {
        "zip-slip": (_zip(folder / "slip.zip", {f"../../../../{escape}": b"pwned"}), "outside"),
        "absolute": (_zip(folder / "abs.zip", {str(escape): b"pwned"}), "outside"),
        "symlink": (
            _tar(folder / "sym.tar", _link(tarfile.SYMTYPE, "images/l", "/etc/passwd")),
            "link",
        ),
        "hardlink": (
            _tar(folder / "hard.tar", _link(tarfile.LNKTYPE, "images/h", "/etc/passwd")),
            "link",
        ),
        "bomb": (
            _zip(folder / "bomb.zip", {"images/p/big.jpg": b"\0" * (64 * 1024 * 1024)}),
            "bomb",
        ),
        "tar-gz-bomb": (_tar_gz_bomb(folder / "bomb.tar.gz"), "bomb"),
        "damaged-zip": (_damaged_zip(folder / "damaged.zip"), "damaged"),
        # gzip's magic and nothing else (schemathesis found this one as a 500)
        "truncated-gzip": (_write(folder / "cut.tar.gz", b"\x1f\x8b\r\n"), "not a zip or tar"),
        "truncated-tar-gz": (_truncated_tar_gz(folder / "half.tar.gz"), "damaged"),
    }


def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def _truncated_tar_gz(path: Path) -> Path:
    data = random.Random(0).randbytes(1_000_000)  # incompressible: the cut lands inside it
    with tarfile.open(path, "w:gz") as archive:
        info = tarfile.TarInfo("images/p/00001.jpg")
        info.size = len(data)
        archive.addfile(info, io.BytesIO(data))
    whole = path.read_bytes()
    return _write(path, whole[: len(whole) // 2])


def _tar_gz_bomb(path: Path) -> Path:
    data = b"\0" * (64 * 1024 * 1024)
    with tarfile.open(path, "w:gz") as archive:
        info = tarfile.TarInfo("images/p/big.jpg")
        info.size = len(data)
        archive.addfile(info, io.BytesIO(data))
    return path


def _damaged_zip(path: Path) -> Path:
    whole = _zip(path, {f"images/p/{i:05d}.jpg": bytes(1000) for i in range(20)}).read_bytes()
    path.write_bytes(whole[:-30])  # the end of the central directory is cut off
    return path


@pytest.mark.parametrize("name", ["zip-slip", "absolute", "symlink", "hardlink", "bomb",
                                  "tar-gz-bomb", "damaged-zip", "truncated-gzip",
                                  "truncated-tar-gz"])
def test_hostile_archives_are_refused_at_upload(
    name: str, client: TestClient, auth: dict[str, str], tmp_path: Path
) -> None:
    archive, word = _corpus(tmp_path, tmp_path / "escaped" / "pwned.txt")[name]
    with archive.open("rb") as handle:
        response = client.post("/v1/datasets", headers=auth,
                               files={"file": (archive.name, handle, "application/zip")})

    assert response.status_code == 422, response.text
    assert response.headers["content-type"].startswith(PROBLEM)
    assert word in response.json()["detail"].lower()
    assert archive.name in response.json()["detail"]  # the client's name, not our temp file
    assert not (tmp_path / "escaped").exists()
    from facespeech.db.models import Dataset
    from facespeech.db.session import session_scope

    with session_scope() as session:
        assert session.query(Dataset).count() == 0, "a refused upload left a dataset row"


@pytest.mark.slow
def test_archive_with_a_bad_layout_fails_its_job_and_escapes_nowhere(tmp_path: Path) -> None:
    port = free_port()
    cluster = start_cluster(cluster_env(tmp_path, port), tmp_path, port)
    escape = tmp_path / "escaped" / "pwned.txt"
    try:
        worker = cluster.start_worker()
        jobs = {}
        inner = _zip(tmp_path / "inner.zip", {"images/p/00001.jpg": b"x"}).read_bytes()
        corpus = {"nested": (_zip(tmp_path / "nested.zip", {"data/inner.zip": inner}),
                             "dataset")}
        for name, (archive, _) in corpus.items():
            with archive.open("rb") as handle:
                created = httpx.post(
                    f"{cluster.base_url}/v1/datasets",
                    headers=cluster.headers,
                    files={"file": (archive.name, handle, "application/zip")},
                    timeout=60,
                )
            assert created.status_code == 201, (name, created.text)
            assert created.json()["source_kind"] == "archive"
            jobs[name] = start_training(cluster, created.json()["id"], {"steps": 2})["id"]
        for name, job_id in jobs.items():
            job = cluster.wait_final(job_id, timeout=240)
            assert job["status"] == "failed", (name, job)
            assert corpus[name][1] in job["error"].lower(), (name, job["error"])
        assert worker.poll() is None, "a hostile archive killed the worker"
        assert not escape.exists() and not (tmp_path / "escaped").exists()
        data = Path(cluster.env["FACESPEECH_DATA_DIR"])
        assert not list((data / "work" / "jobs").glob("*/*")), "scratch left behind"
        for path in (data / "objects" / "data").rglob("*"):
            assert path.relative_to(data / "objects" / "data").parts[0] == "tenants"
    finally:
        stop_cluster(cluster)
