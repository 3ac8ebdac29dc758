from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Header, Query, Request, Response

from facespeech.api import deletion, service
from facespeech.api.deps import CurrentTenant, SessionDep, SettingsDep, StoreDep
from facespeech.api.problems import PROBLEM_RESPONSES
from facespeech.api.schemas import (
    MAX_DB_INT,
    DatasetPublic,
    DatasetsPublic,
    PresignedUploadCreate,
    PresignedUploadPublic,
)
from facespeech.api.uploads import receive_upload, upload_openapi
from facespeech.config import Settings
from facespeech.db.models import Dataset, DatasetStatus
from facespeech.storage import ObjectStore

router = APIRouter(prefix="/v1/datasets", tags=["datasets"], responses=PROBLEM_RESPONSES)
IdempotencyKey = Annotated[str | None, Header(max_length=255)]


def _public(dataset: Dataset, store: ObjectStore, settings: Settings) -> DatasetPublic:
    public = DatasetPublic.model_validate(dataset)
    public.contact_sheet_url = service.contact_sheet_url(store, settings, dataset)
    return public


@router.post(
    "",
    status_code=201,
    response_model=DatasetPublic,
    openapi_extra=upload_openapi("file", ("name",)),
)
async def upload_dataset(
    request: Request,
    tenant: CurrentTenant,
    session: SessionDep,
    store: StoreDep,
    settings: SettingsDep,
    idempotency_key: IdempotencyKey = None,
) -> DatasetPublic:
    """Upload a talking video (mp4/mov/webm/mkv) or an archive (zip/tar): a dataset in the
    layout, or several takes (videos) of one person, joined in name order, the last take's
    tail held out for scoring.

    Send the file as the raw body (`?filename=` names it) or as the `file` part of a
    multipart form with an optional `name` field. The size limit applies while streaming.
    """
    upload = await receive_upload(
        request, settings.work_dir / "uploads", settings.max_upload_bytes, "file", ("name",)
    )
    try:
        dataset = service.create_dataset(
            session, store, settings, tenant, upload, upload.fields.get("name"), idempotency_key
        )
    finally:
        upload.discard()
    return DatasetPublic.model_validate(dataset)


@router.post("/presigned", status_code=201, response_model=PresignedUploadPublic)
def presign_upload(
    body: PresignedUploadCreate,
    tenant: CurrentTenant,
    session: SessionDep,
    store: StoreDep,
    settings: SettingsDep,
) -> PresignedUploadPublic:
    """Get a form POST straight to object storage; then call `.../{id}/complete`."""
    dataset, post = service.presign_dataset_upload(
        session, store, settings, tenant, body.filename, body.size_bytes
    )
    return PresignedUploadPublic(
        dataset_id=dataset.id,
        url=post.url,
        fields=post.fields,
        max_bytes=post.max_bytes,
        expires_in=settings.presign_expiry_s,
    )


@router.post("/{dataset_id}/complete", response_model=DatasetPublic)
def complete_upload(
    dataset_id: str,
    tenant: CurrentTenant,
    session: SessionDep,
    store: StoreDep,
    settings: SettingsDep,
) -> DatasetPublic:
    dataset = service.complete_presigned_upload(session, store, settings, tenant, dataset_id)
    return DatasetPublic.model_validate(dataset)


@router.get("", response_model=DatasetsPublic)
def list_datasets(
    tenant: CurrentTenant,
    session: SessionDep,
    store: StoreDep,
    settings: SettingsDep,
    status: DatasetStatus | None = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    offset: Annotated[int, Query(ge=0, le=MAX_DB_INT)] = 0,
) -> DatasetsPublic:
    """The tenant's datasets, newest first."""
    datasets, count = service.list_datasets(session, tenant, status, limit, offset)
    return DatasetsPublic(data=[_public(d, store, settings) for d in datasets], count=count)


@router.delete("/{dataset_id}", status_code=204)
def delete_dataset(
    dataset_id: str, tenant: CurrentTenant, session: SessionDep, store: StoreDep
) -> Response:
    """Erase the upload and everything learnt from it: its preprocessed form, the models
    trained on it, their checkpoints and the videos rendered with them (409 while a job on it
    is queued or running)."""
    deletion.delete_dataset(session, store, tenant, dataset_id)
    return Response(status_code=204)


@router.get("/{dataset_id}", response_model=DatasetPublic)
def read_dataset(
    dataset_id: str, tenant: CurrentTenant, session: SessionDep, store: StoreDep,
    settings: SettingsDep,
) -> DatasetPublic:
    return _public(service.get_dataset(session, tenant, dataset_id), store, settings)
