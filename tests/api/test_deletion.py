"""DELETE a dataset or a model: objects erased, quota freed, 404 afterwards, 409 while in use."""

from __future__ import annotations

from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from tests.api.test_api import _queued_run, _upload


def _finish_training(job_id: str) -> dict[str, str]:
    """Make a queued training run look finished, as a worker would leave it: a model file,
    two stored checkpoints, and a finished render of the model with its video."""
    from facespeech import object_keys
    from facespeech.db.models import (
        Artifact,
        Job,
        JobKind,
        JobStatus,
        ModelStatus,
        TrainedModel,
    )
    from facespeech.db.session import session_scope
    from facespeech.storage import get_store

    store = get_store()
    with session_scope() as session:
        job = session.get(Job, job_id)
        assert job is not None and job.model_id
        model = session.get(TrainedModel, job.model_id)
        assert model is not None
        t = job.tenant_id
        keys = {
            "model": object_keys.model_checkpoint(t, model.id),
            "checkpoint": object_keys.job_checkpoints(t, job.id) + "step-000001000.pt",
        }
        render = Job(tenant_id=t, kind=JobKind.render, model_id=model.id,
                     dataset_id=job.dataset_id, status=JobStatus.succeeded)
        session.add(render)
        session.flush()
        keys["video"] = object_keys.render_video(t, render.id)
        render.result_key = keys["video"]
        for kind, key in keys.items():
            stored = store.put_bytes(key, b"x" * 1000)
            session.add(Artifact(tenant_id=t, job_id=job.id, kind=kind, key=key,
                                 size_bytes=stored.size, sha256=stored.sha256,
                                 content_type="application/octet-stream"))
        job.status = JobStatus.succeeded
        model.status, model.checkpoint_key = ModelStatus.ready, keys["model"]
        return {**keys, "render_job": render.id, "tenant": t}


def _used_bytes(tenant_id: str) -> int:
    from facespeech.api.limits import stored_bytes
    from facespeech.db.models import Tenant
    from facespeech.db.session import session_scope

    with session_scope() as session:
        tenant = session.get(Tenant, tenant_id)
        assert tenant is not None
        return stored_bytes(session, tenant)


def test_deleting_a_dataset_erases_everything_learnt_from_it(
    client: TestClient, auth: dict[str, str], small_video: Path
) -> None:
    from facespeech.storage import get_store

    run = _queued_run(client, auth, small_video)
    dataset = {"id": run["dataset_id"]}
    busy = client.delete(f"/v1/datasets/{dataset['id']}", headers=auth)
    assert busy.status_code == 409 and run["id"] in busy.json()["detail"]

    made = _finish_training(run["id"])
    store = get_store()
    prefix = f"tenants/{made['tenant']}/"
    before = _used_bytes(made["tenant"])
    assert store.list(prefix + f"datasets/{dataset['id']}/")

    assert client.delete(f"/v1/datasets/{dataset['id']}", headers=auth).status_code == 204
    for key in ("model", "checkpoint", "video"):
        assert not store.exists(made[key]), key
    assert not store.list(prefix + f"datasets/{dataset['id']}/")
    assert _used_bytes(made["tenant"]) < before and _used_bytes(made["tenant"]) == 0
    assert client.get(f"/v1/datasets/{dataset['id']}", headers=auth).status_code == 404
    assert client.get(f"/v1/models/{run['model_id']}", headers=auth).status_code == 404
    assert client.get("/v1/datasets", headers=auth).json()["count"] == 0
    assert client.get("/v1/models", headers=auth).json()["count"] == 0
    render = client.get(f"/v1/jobs/{made['render_job']}", headers=auth).json()
    assert render["result_url"] is None  # the job stays in the history, its video is gone
    again = client.post("/v1/training-runs", headers=auth,
                        json={"dataset_id": dataset["id"], "preset": "tiny"})
    assert again.status_code == 404
    assert client.delete(f"/v1/datasets/{dataset['id']}", headers=auth).status_code == 404


def test_deleting_a_model_keeps_its_videos_and_its_dataset(
    client: TestClient, auth: dict[str, str], small_video: Path
) -> None:
    from facespeech.storage import get_store

    run = _queued_run(client, auth, small_video)
    dataset = {"id": run["dataset_id"]}
    assert client.delete(f"/v1/models/{run['model_id']}", headers=auth).status_code == 409
    made = _finish_training(run["id"])
    store = get_store()

    assert client.delete(f"/v1/models/{run['model_id']}", headers=auth).status_code == 204
    assert not store.exists(made["model"]) and not store.exists(made["checkpoint"])
    assert store.exists(made["video"])
    assert client.get(f"/v1/jobs/{made['render_job']}", headers=auth).json()["result_url"]
    assert client.get(f"/v1/datasets/{dataset['id']}", headers=auth).status_code == 200
    assert client.get(f"/v1/models/{run['model_id']}", headers=auth).status_code == 404
    render = client.post("/v1/renders", headers=auth, data={"model_id": run["model_id"]},
                         files={"audio": ("a.wav", b"RIFF", "audio/wav")})
    assert render.status_code == 404


def test_another_tenant_cannot_delete(
    client: TestClient, auth: dict[str, str], other_auth: dict[str, str], small_video: Path
) -> None:
    dataset = _upload(client, auth, small_video).json()
    assert client.delete(f"/v1/datasets/{dataset['id']}", headers=other_auth).status_code == 404
    assert client.get(f"/v1/datasets/{dataset['id']}", headers=auth).status_code == 200


def test_a_delete_that_cannot_be_committed_is_not_reported_done(
    client: TestClient, auth: dict[str, str], small_video: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The request's transaction commits before the answer leaves: a 204 sent first would
    tell the client of a deletion the database then lost (and lets its next request read
    the state from before)."""
    from sqlalchemy.exc import OperationalError
    from sqlalchemy.orm import Session

    run = _queued_run(client, auth, small_video)
    _finish_training(run["id"])

    def lost_connection(self: Session) -> None:
        raise OperationalError("COMMIT", {}, Exception("server closed the connection"))

    monkeypatch.setattr(Session, "commit", lost_connection)
    answer = TestClient(client.app, raise_server_exceptions=False).delete(
        f"/v1/datasets/{run['dataset_id']}", headers=auth)
    monkeypatch.undo()

    assert answer.status_code >= 500
    assert client.get(f"/v1/datasets/{run['dataset_id']}", headers=auth).status_code == 200
