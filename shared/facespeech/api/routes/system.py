"""Health, readiness, metrics, and the local store's signed download/upload links."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import Response, StreamingResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from sqlalchemy import text

from facespeech.api.deps import SessionDep, SettingsDep, StoreDep
from facespeech.api.problems import PROBLEM_RESPONSES, Problem
from facespeech.api.schemas import Health
from facespeech.api.uploads import receive_upload
from facespeech.storage import (
    InvalidToken,
    ObjectNotFound,
    content_disposition,
    verify_download_token,
    verify_upload_token,
)

router = APIRouter(tags=["system"], responses=PROBLEM_RESPONSES)


@router.get("/healthz", response_model=Health)
def healthz() -> Health:
    return Health(status="ok")


@router.get("/readyz", response_model=Health)
def readyz(session: SessionDep, store: StoreDep) -> Health:
    checks: dict[str, str] = {}
    try:
        session.execute(text("SELECT 1"))
        checks["database"] = "ok"
    except Exception as error:
        raise Problem(503, "Not Ready", f"database: {error}", retry_after=5) from error
    try:
        store.exists("readyz-probe")
        checks["store"] = "ok"
    except Exception as error:
        raise Problem(503, "Not Ready", f"object store: {error}") from error
    return Health(status="ok", checks=checks)


@router.get("/metrics", include_in_schema=False)
def metrics() -> Response:
    return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)


@router.get("/v1/files/{token}", include_in_schema=False)
def download(token: str, store: StoreDep, settings: SettingsDep) -> StreamingResponse:
    """The local store's presigned GET: a signed, expiring link to one object."""
    try:
        key, filename = verify_download_token(token, settings.secret_key)
    except InvalidToken as error:
        raise Problem(403, "Forbidden", "the link is invalid or has expired") from error
    try:
        size = store.size(key)
    except ObjectNotFound as error:
        raise Problem(404, "Not Found", "the object no longer exists") from error
    headers = {"Content-Length": str(size)}
    if filename:
        headers["Content-Disposition"] = content_disposition(filename)
    return StreamingResponse(
        store.iter_chunks(key), media_type="application/octet-stream", headers=headers
    )


@router.post("/v1/uploads/{token}", status_code=204, include_in_schema=False)
async def presigned_upload(
    token: str, request: Request, store: StoreDep, settings: SettingsDep
) -> Response:
    """The local store's presigned POST: one object, size-limited by the signed token."""
    try:
        key, max_bytes = verify_upload_token(token, settings.secret_key)
    except InvalidToken as error:
        raise Problem(403, "Forbidden", "the upload link is invalid or has expired") from error
    upload = await receive_upload(request, settings.work_dir / "uploads", max_bytes, "file", ())
    try:
        store.put_file(key, upload.path, upload.content_type or "application/octet-stream")
    finally:
        upload.discard()
    return Response(status_code=204)
