"""Hostile dataset archives through the real path: upload over HTTP, a real worker process
preprocesses them. Each job fails with a reason, the worker lives, and nothing is written
outside the job's folders or the tenant's prefix."""

from __future__ import annotations

import io
import tarfile
import zipfile
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from tests.conftest import free_port
from tests.reliability.conftest import cluster_env, start_cluster, start_training, stop_cluster

pytestmark = pytest.mark.slow


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
    inner = _zip(folder / "inner.zip", {"images/p/00001.jpg": b"x"}).read_bytes()
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
        "nested": (_zip(folder / "nested.zip", {"data/inner.zip": inner}), "dataset"),
    }


def test_hostile_archives_fail_their_jobs_and_escape_nowhere(tmp_path: Path) -> None:
    port = free_port()
    cluster = start_cluster(cluster_env(tmp_path, port), tmp_path, port)
    escape = tmp_path / "escaped" / "pwned.txt"
    try:
        worker = cluster.start_worker()
        jobs = {}
        corpus = _corpus(tmp_path, escape)
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
