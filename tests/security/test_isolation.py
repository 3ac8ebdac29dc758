"""Object-level authorisation: tenant B asks every route for tenant A's objects and learns
nothing. Routes are enumerated from the app, so a new route cannot be left out."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from fastapi.routing import APIRoute
from fastapi.testclient import TestClient

from tests.security.conftest import write_video

# Routes that are no one's objects: health, metrics, and the signed links of the local store
# (a link grants one object to whoever holds it; tampering is tested below).
PUBLIC_ROUTES = {
    "/", "/healthz", "/readyz", "/metrics", "/v1/files/{token}", "/v1/uploads/{token}",
}


def api_routes(routes: list[Any], prefix: str = "") -> list[tuple[str, APIRoute]]:
    """(full path, route) of every API route, through included routers of any FastAPI version."""
    found: list[tuple[str, APIRoute]] = []
    for route in routes:
        if isinstance(route, APIRoute):
            found.append((prefix + route.path, route))
        elif hasattr(route, "original_router"):  # FastAPI >= 0.16x keeps included routers
            found += api_routes(route.original_router.routes, prefix + route.include_context.prefix)
    return found


def _tenant_a_objects(client: TestClient, auth: dict[str, str], tmp_path: Path) -> dict[str, str]:
    from facespeech.db.models import Job, JobKind, JobStatus, ModelStatus, TrainedModel
    from facespeech.db.session import session_scope

    video = write_video(tmp_path / "a.mp4")
    with video.open("rb") as handle:
        dataset = client.post(
            "/v1/datasets", headers=auth, files={"file": ("a.mp4", handle, "video/mp4")}
        ).json()
    run = client.post("/v1/training-runs", headers=auth, json={"dataset_id": dataset["id"]})
    assert run.status_code == 202, run.text
    job = run.json()
    with session_scope() as session:  # make A's model usable, as a finished run would
        model = session.get(TrainedModel, job["model_id"])
        assert model is not None
        model.status, model.checkpoint_key = ModelStatus.ready, "k"
        row = session.get(Job, job["id"])
        assert row is not None and row.kind is JobKind.train
        row.status = JobStatus.running  # cancel must not touch it either
    presigned = client.post(
        "/v1/datasets/presigned", headers=auth, json={"filename": "b.mp4", "size_bytes": 1000}
    ).json()
    return {
        "dataset_id": dataset["id"],
        "job_id": job["id"],
        "model_id": job["model_id"],
        "pending_dataset_id": presigned["dataset_id"],
    }


def _call(
    client: TestClient, full_path: str, method: str, path: str, auth: dict[str, str], model_id: str
) -> Any:
    if method == "GET":
        return client.get(path, headers=auth)
    if method == "DELETE":
        return client.delete(path, headers=auth)
    if full_path == "/v1/renders":
        return client.post(
            path,
            headers=auth,
            data={"model_id": model_id},
            files={"audio": ("a.wav", b"RIFF", "audio/wav")},
        )
    return client.post(path, headers=auth, json={})


def test_no_route_leaks_another_tenants_objects(
    client: TestClient, auth: dict[str, str], other_auth: dict[str, str], tmp_path: Path
) -> None:
    objects = _tenant_a_objects(client, auth, tmp_path)
    secrets = set(objects.values())
    checked = set()
    for full_path, route in api_routes(client.app.routes):  # type: ignore[attr-defined]
        if full_path in PUBLIC_ROUTES:
            continue
        for method in route.methods - {"HEAD"}:
            names = re.findall(r"{(\w+)}", full_path)
            unknown = set(names) - set(objects)
            assert not unknown, f"{method} {route.path}: add its parameters {unknown} here"
            variants = [objects]
            if "dataset_id" in names:
                variants.append({**objects, "dataset_id": objects["pending_dataset_id"]})
            for values in variants:
                path = re.sub(r"{(\w+)}", lambda m, v=values: v[m.group(1)], full_path)
                response = _call(client, full_path, method, path, other_auth, objects["model_id"])
                if full_path == "/v1/training-runs":
                    response = client.post(
                        path, headers=other_auth, json={"dataset_id": objects["dataset_id"]}
                    )
                assert (
                    response.status_code in (404, 422)
                    if names or method in ("POST", "DELETE")
                    else (response.status_code == 200)
                ), (method, path, response.text)
                # an id echoed from the path is not a leak; any other id of A's is
                sent = path + {
                    "/v1/training-runs": objects["dataset_id"],
                    "/v1/renders": objects["model_id"],
                }.get(full_path, "")
                leaked = [s for s in secrets if s in response.text and s not in sent]
                assert not leaked, f"{method} {path} leaks {leaked}: {response.text}"
                if names and method == "GET":  # indistinguishable from an id that never was
                    ghost = re.sub(r"{(\w+)}", "0" * 32, full_path)
                    unknown_body = client.get(ghost, headers=other_auth)
                    assert response.status_code == unknown_body.status_code
            checked.add((method, full_path))
    assert ("GET", "/v1/jobs/{job_id}") in checked and len(checked) >= 9
    assert ("DELETE", "/v1/datasets/{dataset_id}") in checked
    # and tenant A's objects survive B's deletes, A's job B's cancel
    job = client.get(f"/v1/jobs/{objects['job_id']}", headers=auth).json()
    assert job["status"] == "running"
    assert client.get(f"/v1/datasets/{objects['dataset_id']}", headers=auth).status_code == 200
    assert client.get(f"/v1/models/{objects['model_id']}", headers=auth).json()["status"] == "ready"


def test_tampered_download_links_are_refused(client: TestClient, auth: dict[str, str]) -> None:
    from facespeech.config import get_settings
    from facespeech.storage import get_store

    store = get_store()
    mine = store.put_bytes("tenants/a/jobs/1/render.mp4", b"mine")
    store.put_bytes("tenants/b/jobs/2/render.mp4", b"theirs")
    url = store.presigned_get(mine.key, get_settings().presign_expiry_s, "x.mp4")
    token = url.rsplit("/", 1)[1]
    assert client.get(f"/v1/files/{token}").content == b"mine"
    body, _, signature = token.partition(".")
    import base64
    import json

    payload = json.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))
    payload["k"] = "tenants/b/jobs/2/render.mp4"
    forged = base64.urlsafe_b64encode(json.dumps(payload).encode()).rstrip(b"=").decode()
    assert client.get(f"/v1/files/{forged}.{signature}").status_code == 403
    assert client.post(f"/v1/uploads/{token}", content=b"x").status_code == 403


def test_links_expire_and_are_short_lived() -> None:
    import time

    from facespeech.config import Settings
    from facespeech.storage import InvalidToken, LocalStore, verify_download_token

    settings = Settings()
    assert settings.presign_expiry_s <= 900
    store = LocalStore(Path("/tmp/unused-store"), "s", "http://x")
    token = store.presigned_get("tenants/a/x", 60).rsplit("/", 1)[1]
    assert verify_download_token(token, "s")[0] == "tenants/a/x"
    try:
        verify_download_token(token, "s", now=time.time() + 61)
    except InvalidToken:
        return
    raise AssertionError("an expired link was accepted")


def test_s3_links_are_scoped_and_short_lived(moto_endpoint_url: str) -> None:
    from urllib.parse import parse_qs, urlparse

    from facespeech.storage.s3 import S3Store

    store = S3Store(moto_endpoint_url, "testing", "testing", "scoped-links")
    store.put_bytes("tenants/a/x.mp4", b"x")
    url = urlparse(store.presigned_get("tenants/a/x.mp4", 900))
    assert url.path == "/scoped-links/tenants/a/x.mp4"
    assert parse_qs(url.query)["X-Amz-Expires"] == ["900"]
    post = store.presigned_post("tenants/a/upload.mp4", 900, 1000)
    assert post.fields["key"] == "tenants/a/upload.mp4"
