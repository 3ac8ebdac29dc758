"""The small web page on top of the API: one HTML file, its script and style sheet."""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter, FastAPI
from fastapi.responses import FileResponse
from fastapi.staticfiles import StaticFiles

STATIC = Path(__file__).resolve().parents[1] / "static"
# The page runs only its own script and talks only to this API; result videos may come from
# the object store's own host (a presigned S3/MinIO URL), hence media-src.
CONTENT_SECURITY_POLICY = (
    "default-src 'self'; media-src 'self' http: https:; img-src 'self' data:; "
    "object-src 'none'; base-uri 'none'; frame-ancestors 'none'"
)

router = APIRouter(include_in_schema=False)


@router.get("/")
async def index() -> FileResponse:
    return FileResponse(
        STATIC / "index.html",
        headers={
            "Content-Security-Policy": CONTENT_SECURITY_POLICY,
            "X-Content-Type-Options": "nosniff",
            "Referrer-Policy": "no-referrer",
        },
    )


def mount_static(app: FastAPI) -> None:
    app.mount("/ui", StaticFiles(directory=STATIC), name="ui")
