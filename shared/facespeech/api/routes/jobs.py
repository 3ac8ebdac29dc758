from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Header, Query, Request, Response
from fastapi.responses import StreamingResponse

from facespeech.api import deletion, service
from facespeech.api.deps import CurrentTenant, SessionDep, SettingsDep, StoreDep
from facespeech.api.event_stream import (
    EVENT_STREAM,
    check_stream_slot,
    job_events,
    wants_stream,
)
from facespeech.api.problems import PROBLEM_RESPONSES
from facespeech.api.schemas import (
    MAX_DB_INT,
    JobEventPublic,
    JobEventsPublic,
    JobPublic,
    JobsPublic,
    ModelPublic,
    ModelsPublic,
    TrainingRunCreate,
)
from facespeech.api.uploads import receive_upload, upload_openapi
from facespeech.config import Settings
from facespeech.db.models import Job, JobKind, JobStatus, ModelStatus
from facespeech.storage import ObjectStore

router = APIRouter(prefix="/v1", tags=["jobs"], responses=PROBLEM_RESPONSES)
IdempotencyKey = Annotated[str | None, Header(max_length=255)]


def _public(job: Job, store: ObjectStore, settings: Settings) -> JobPublic:
    public = JobPublic.model_validate(job)
    public.result_url = service.result_url(store, settings, job)
    return public


@router.post("/training-runs", status_code=202, response_model=JobPublic)
def start_training_run(
    body: TrainingRunCreate,
    tenant: CurrentTenant,
    session: SessionDep,
    store: StoreDep,
    settings: SettingsDep,
    idempotency_key: IdempotencyKey = None,
) -> JobPublic:
    job = service.create_training_run(
        session, settings, tenant, body.dataset_id, body.preset, body.overrides, idempotency_key
    )
    return _public(job, store, settings)


@router.post(
    "/renders",
    status_code=202,
    response_model=JobPublic,
    openapi_extra=upload_openapi("audio", ("model_id", "options")),
)
async def start_render(
    request: Request,
    tenant: CurrentTenant,
    session: SessionDep,
    store: StoreDep,
    settings: SettingsDep,
    idempotency_key: IdempotencyKey = None,
) -> JobPublic:
    """Render speech with a trained model: multipart form with `model_id`, an `audio` file
    (wav/mp3/m4a/flac/ogg, any sample rate) and optionally `options` (RenderOptions as JSON),
    or the audio as the raw body with `?model_id=` (and `&options=`)."""
    upload = await receive_upload(
        request,
        settings.work_dir / "uploads",
        settings.max_upload_bytes,
        "audio",
        ("model_id", "options"),
    )
    try:
        job = service.create_render(session, store, settings, tenant, upload, idempotency_key)
    finally:
        upload.discard()
    return _public(job, store, settings)


@router.get("/jobs", response_model=JobsPublic)
def list_jobs(
    tenant: CurrentTenant,
    session: SessionDep,
    store: StoreDep,
    settings: SettingsDep,
    kind: JobKind | None = None,
    status: JobStatus | None = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    offset: Annotated[int, Query(ge=0, le=MAX_DB_INT)] = 0,
) -> JobsPublic:
    jobs, count = service.list_jobs(session, tenant, kind, status, limit, offset)
    return JobsPublic(data=[_public(job, store, settings) for job in jobs], count=count)


@router.get("/jobs/{job_id}", response_model=JobPublic)
def read_job(
    job_id: str, tenant: CurrentTenant, session: SessionDep, store: StoreDep, settings: SettingsDep
) -> JobPublic:
    return _public(service.get_job(session, tenant, job_id), store, settings)


@router.get(
    "/jobs/{job_id}/events",
    response_model=JobEventsPublic,
    responses={200: {"content": {EVENT_STREAM: {"schema": {"type": "string"}}}}},
)
def read_job_events(
    request: Request,
    job_id: str,
    tenant: CurrentTenant,
    session: SessionDep,
    settings: SettingsDep,
    after: Annotated[int, Query(ge=0, le=MAX_DB_INT)] = 0,
    limit: Annotated[int, Query(ge=1, le=1000)] = 200,
    last_event_id: Annotated[int | None, Header(ge=0, le=MAX_DB_INT)] = None,
) -> JobEventsPublic | StreamingResponse:
    """The job's timeline, oldest first, after event `after`. With `Accept:
    text/event-stream`, Server-Sent Events instead: each event as it happens, then `end`
    once the job is final (`Last-Event-ID` resumes a broken stream)."""
    if wants_stream(request.headers.get("accept", "")):
        service.get_job(session, tenant, job_id)  # 404 for others' jobs, before streaming
        check_stream_slot(tenant.id, settings)
        start = after if last_event_id is None else last_event_id
        stream = job_events(tenant.id, job_id, start, settings.event_stream_max_s)
        # X-Accel-Buffering: nginx (the k8s ingress) would otherwise hold events back
        return StreamingResponse(stream, media_type=EVENT_STREAM,
                                 headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
    events = service.list_events(session, tenant, job_id, after, limit)
    return JobEventsPublic(
        data=[JobEventPublic.model_validate(e) for e in events], count=len(events)
    )


@router.post("/jobs/{job_id}/cancel", response_model=JobPublic)
def cancel_job(
    job_id: str, tenant: CurrentTenant, session: SessionDep, store: StoreDep, settings: SettingsDep
) -> JobPublic:
    return _public(service.cancel_job(session, tenant, job_id), store, settings)


@router.get("/models", response_model=ModelsPublic)
def list_models(
    tenant: CurrentTenant,
    session: SessionDep,
    status: ModelStatus | None = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    offset: Annotated[int, Query(ge=0, le=MAX_DB_INT)] = 0,
) -> ModelsPublic:
    """The tenant's models, newest first; `?status=ready` for those that can render."""
    models, count = service.list_models(session, tenant, status, limit, offset)
    return ModelsPublic(data=[ModelPublic.model_validate(m) for m in models], count=count)


@router.delete("/models/{model_id}", status_code=204)
def delete_model(
    model_id: str, tenant: CurrentTenant, session: SessionDep, store: StoreDep
) -> Response:
    """Erase a model's weights and training checkpoints; videos rendered with it stay (409
    while it trains or renders)."""
    deletion.delete_model(session, store, tenant, model_id)
    return Response(status_code=204)


@router.get("/models/{model_id}", response_model=ModelPublic)
def read_model(model_id: str, tenant: CurrentTenant, session: SessionDep) -> ModelPublic:
    return ModelPublic.model_validate(service.get_model(session, tenant, model_id))
