"""The service layer: what routes call. Knows the database, the store and the queue."""

from __future__ import annotations

import logging
from pathlib import PurePosixPath
from typing import Any

from sqlalchemy import Select, func, select
from sqlalchemy.orm import Session

from facespeech import media, object_keys
from facespeech.api import limits
from facespeech.api.problems import Problem, not_found
from facespeech.api.schemas import RenderOptions
from facespeech.api.uploads import ReceivedUpload
from facespeech.config import Settings
from facespeech.db.models import (
    Dataset,
    DatasetStatus,
    Job,
    JobEvent,
    JobKind,
    JobStatus,
    ModelStatus,
    Tenant,
    TrainedModel,
)
from facespeech.errors import InputError
from facespeech.jobs import state
from facespeech.jobs.tasks import enqueue
from facespeech.media.integrity import verify_complete
from facespeech.preprocess.archive_check import inspect_archive
from facespeech.preprocess.report import CONTACT_SHEET_NAME
from facespeech.storage import ObjectStore
from facespeech.storage.base import PresignedPost

log = logging.getLogger(__name__)
ARCHIVE_MAGIC = (b"PK\x03\x04", b"\x1f\x8b")


# --- datasets ------------------------------------------------------------------------------


def _is_archive(path: Any) -> bool:
    with open(path, "rb") as handle:
        head = handle.read(512)
    return head.startswith(ARCHIVE_MAGIC) or head[257:262] == b"ustar"


def _in_client_terms(upload: ReceivedUpload, error: InputError) -> InputError:
    """The library names our temp file; the client knows its own file name, not our paths."""
    message = str(error).replace(str(upload.path), upload.filename)
    return InputError(message.replace(upload.path.name, upload.filename))


def _source_kind(upload: ReceivedUpload, settings: Settings) -> str:
    try:
        return _checked_source_kind(upload, settings)
    except InputError as error:
        raise _in_client_terms(upload, error) from error


def _checked_source_kind(upload: ReceivedUpload, settings: Settings) -> str:
    if _is_archive(upload.path):
        inspect_archive(upload.path)  # InputError -> 422: zip slip, bombs, links, damage
        return "archive"
    info = media.probe(upload.path)  # InputError -> 422 for anything that is not media
    name = upload.filename
    if not info.has_video:
        raise InputError(f"'{name}' has no video stream; upload a talking video")
    if not info.has_audio:
        raise InputError(f"'{name}' has no audio track; training needs the person's speech")
    small, large = settings.min_video_side, settings.max_video_side
    if min(info.width, info.height) < small or max(info.width, info.height) > large:
        raise InputError(
            f"'{name}' is {info.width}x{info.height}; frames must be between {small} and "
            f"{large} pixels on each side"
        )
    if not 1 <= info.fps <= settings.max_video_fps:
        raise InputError(
            f"'{name}' runs at {info.fps:g} fps; between 1 and {settings.max_video_fps:g} "
            "is accepted"
        )
    verify_complete(upload.path)
    return "video"


def _existing_dataset(session: Session, tenant: Tenant, key: str | None) -> Dataset | None:
    if not key:
        return None
    return session.scalar(
        select(Dataset).where(Dataset.tenant_id == tenant.id, Dataset.idempotency_key == key)
    )


def create_dataset(
    session: Session,
    store: ObjectStore,
    settings: Settings,
    tenant: Tenant,
    upload: ReceivedUpload,
    name: str | None,
    idempotency_key: str | None,
) -> Dataset:
    existing = _existing_dataset(session, tenant, idempotency_key)
    if existing is not None:
        return existing
    limits.check_storage(session, tenant, settings, upload.size)
    kind = _source_kind(upload, settings)
    dataset = Dataset(
        tenant_id=tenant.id,
        name=(name or upload.filename)[:255],
        source_kind=kind,
        source_key="",
        size_bytes=upload.size,
        sha256=upload.sha256,
        idempotency_key=idempotency_key,
    )
    session.add(dataset)
    session.flush()
    dataset.source_key = object_keys.dataset_source(tenant.id, dataset.id, upload.filename)
    store.put_file(
        dataset.source_key, upload.path, upload.content_type or "application/octet-stream"
    )
    session.commit()
    return dataset


def presign_dataset_upload(
    session: Session,
    store: ObjectStore,
    settings: Settings,
    tenant: Tenant,
    filename: str,
    size_bytes: int,
) -> tuple[Dataset, PresignedPost]:
    if size_bytes > settings.max_upload_bytes:
        raise Problem(413, "Payload Too Large", f"the limit is {settings.max_upload_bytes} bytes")
    limits.check_storage(session, tenant, settings, size_bytes)
    dataset = Dataset(
        tenant_id=tenant.id,
        name=filename[:255],
        source_kind="video",
        source_key="",
        status=DatasetStatus.pending_upload,
    )
    session.add(dataset)
    session.flush()
    dataset.source_key = object_keys.dataset_source(tenant.id, dataset.id, filename)
    post = store.presigned_post(dataset.source_key, settings.presign_expiry_s, size_bytes)
    session.commit()
    return dataset, post


def complete_presigned_upload(
    session: Session, store: ObjectStore, settings: Settings, tenant: Tenant, dataset_id: str
) -> Dataset:
    dataset = get_dataset(session, tenant, dataset_id)
    if dataset.status is not DatasetStatus.pending_upload:
        return dataset
    if not store.exists(dataset.source_key):
        raise Problem(409, "Upload Missing", "nothing was uploaded to the presigned URL yet")
    local = settings.work_dir / "uploads" / f"{dataset.id}.check"
    store.get_file(dataset.source_key, local)
    try:
        upload = ReceivedUpload(local, dataset.name, "", local.stat().st_size, "")
        dataset.source_kind = _source_kind(upload, settings)
    except InputError:
        store.delete(dataset.source_key)
        session.delete(dataset)
        session.commit()
        raise
    finally:
        local.unlink(missing_ok=True)
    dataset.size_bytes, dataset.status = upload.size, DatasetStatus.uploaded
    session.commit()
    return dataset


def get_dataset(session: Session, tenant: Tenant, dataset_id: str) -> Dataset:
    dataset = session.get(Dataset, dataset_id)
    if dataset is None or dataset.tenant_id != tenant.id or dataset.status is DatasetStatus.deleted:
        raise not_found("dataset", dataset_id)
    return dataset


def list_datasets(
    session: Session, tenant: Tenant, status: DatasetStatus | None, limit: int, offset: int
) -> tuple[list[Dataset], int]:
    query = select(Dataset).where(Dataset.tenant_id == tenant.id,
                                  Dataset.status != DatasetStatus.deleted)
    if status is not None:
        query = query.where(Dataset.status == status)
    return _page(session, query, Dataset.created_at, limit, offset)


def _page(session: Session, query: Select[Any], newest_first: Any, limit: int, offset: int
          ) -> tuple[list[Any], int]:
    """One page of a query's rows, newest first, and how many rows there are in all."""
    count = session.scalar(select(func.count()).select_from(query.subquery())) or 0
    rows = session.scalars(query.order_by(newest_first.desc()).limit(limit).offset(offset))
    return list(rows), count


# --- jobs ----------------------------------------------------------------------------------


def _existing_job(session: Session, tenant: Tenant, key: str | None) -> Job | None:
    if not key:
        return None
    return session.scalar(select(Job).where(Job.tenant_id == tenant.id, Job.idempotency_key == key))


def _dispatch(session: Session, job: Job, task_name: str) -> None:
    """Queue the job once its row is committed, so a fast worker always finds it."""
    session.commit()
    try:
        job.celery_task_id = enqueue(task_name, job.id)
    except Exception as error:  # broker down: fail visibly instead of leaving a ghost job
        log.exception("could not queue job %s", job.id)
        job.status, job.error = JobStatus.failed, f"could not queue the job: {error}"
        session.commit()
        raise Problem(
            503, "Queue Unavailable", "the job queue is unreachable; try again", retry_after=5
        ) from error
    session.commit()


def create_training_run(
    session: Session,
    settings: Settings,
    tenant: Tenant,
    dataset_id: str,
    preset: str,
    overrides: dict[str, Any],
    idempotency_key: str | None,
) -> Job:
    existing = _existing_job(session, tenant, idempotency_key)
    if existing is not None:
        return existing
    dataset = get_dataset(session, tenant, dataset_id)
    if dataset.status in (DatasetStatus.failed, DatasetStatus.pending_upload):
        reason = dataset.error or "its upload was never completed"
        raise Problem(
            409, "Dataset Not Usable", f"dataset {dataset.id} is {dataset.status}: {reason}"
        )
    _validate_train_config(preset, overrides)
    limits.check_active_jobs(session, tenant, settings)
    job = Job(
        tenant_id=tenant.id,
        kind=JobKind.train,
        dataset_id=dataset.id,
        params={"preset": preset, "overrides": overrides},
        idempotency_key=idempotency_key,
    )
    session.add(job)
    session.flush()
    model = TrainedModel(tenant_id=tenant.id, dataset_id=dataset.id, job_id=job.id, preset=preset)
    session.add(model)
    session.flush()
    job.model_id = model.id
    state.add_event(session, job.id, "status", "queued")
    _dispatch(session, job, "facespeech.preprocess")
    return job


def _validate_train_config(preset: str, overrides: dict[str, Any]) -> None:
    from facespeech.train import TrainConfig

    try:
        TrainConfig.from_preset(preset, overrides)
    except ValueError as error:  # pydantic's ValidationError is a ValueError
        raise Problem(422, "Invalid Training Config", str(error)) from error


def get_model(session: Session, tenant: Tenant, model_id: str) -> TrainedModel:
    model = session.get(TrainedModel, model_id)
    if model is None or model.tenant_id != tenant.id or model.status is ModelStatus.deleted:
        raise not_found("model", model_id)
    return model


def list_models(
    session: Session, tenant: Tenant, status: ModelStatus | None, limit: int, offset: int
) -> tuple[list[TrainedModel], int]:
    query = select(TrainedModel).where(TrainedModel.tenant_id == tenant.id,
                                       TrainedModel.status != ModelStatus.deleted)
    if status is not None:
        query = query.where(TrainedModel.status == status)
    return _page(session, query, TrainedModel.created_at, limit, offset)


def _check_audio(upload: ReceivedUpload, settings: Settings) -> None:
    try:
        info = media.probe(upload.path)
    except InputError as error:
        raise _in_client_terms(upload, error) from error
    if not info.has_audio:
        raise InputError(f"'{upload.filename}' has no audio stream")
    if info.duration_s > settings.max_audio_seconds:
        raise Problem(
            413,
            "Audio Too Long",
            f"the audio lasts {info.duration_s:.0f} s; the limit is "
            f"{settings.max_audio_seconds:.0f} s",
        )
    if 0 < info.duration_s < settings.min_audio_seconds:
        raise InputError(
            f"the audio lasts {info.duration_s:.2f} s; at least "
            f"{settings.min_audio_seconds} s is needed"
        )


def _render_options(text: str) -> RenderOptions:
    try:
        return RenderOptions.model_validate_json(text)
    except ValueError as error:  # pydantic's ValidationError is a ValueError
        raise Problem(422, "Invalid Render Options", str(error)) from error


def create_render(
    session: Session,
    store: ObjectStore,
    settings: Settings,
    tenant: Tenant,
    upload: ReceivedUpload,
    idempotency_key: str | None,
) -> Job:
    existing = _existing_job(session, tenant, idempotency_key)
    if existing is not None:
        return existing
    model_id = upload.fields.get("model_id", "")
    if not model_id:
        raise Problem(422, "Missing model_id", "send the model_id form field")
    model = get_model(session, tenant, model_id)
    if model.status is not ModelStatus.ready:
        raise Problem(409, "Model Not Ready", f"model {model.id} is {model.status}")
    options = _render_options(upload.fields.get("options") or "{}")
    _check_audio(upload, settings)
    limits.check_active_jobs(session, tenant, settings)
    limits.check_storage(session, tenant, settings, upload.size)
    job = Job(
        tenant_id=tenant.id,
        kind=JobKind.render,
        model_id=model.id,
        dataset_id=model.dataset_id,
        params={},
        idempotency_key=idempotency_key,
    )
    session.add(job)
    session.flush()
    audio_key = object_keys.render_audio(tenant.id, job.id, upload.filename)
    store.put_file(audio_key, upload.path, upload.content_type or "application/octet-stream")
    job.params = {"audio_key": audio_key, "options": options.model_dump(exclude_unset=True)}
    state.add_event(session, job.id, "status", "queued")
    _dispatch(session, job, "facespeech.render")
    return job


def get_job(session: Session, tenant: Tenant, job_id: str) -> Job:
    job = session.get(Job, job_id)
    if job is None or job.tenant_id != tenant.id:
        raise not_found("job", job_id)
    return job


def list_jobs(
    session: Session,
    tenant: Tenant,
    kind: JobKind | None,
    status: JobStatus | None,
    limit: int,
    offset: int,
) -> tuple[list[Job], int]:
    query = select(Job).where(Job.tenant_id == tenant.id)
    if kind is not None:
        query = query.where(Job.kind == kind)
    if status is not None:
        query = query.where(Job.status == status)
    return _page(session, query, Job.created_at, limit, offset)


def list_events(
    session: Session, tenant: Tenant, job_id: str, after_id: int, limit: int
) -> list[JobEvent]:
    get_job(session, tenant, job_id)
    rows = session.scalars(
        select(JobEvent)
        .where(JobEvent.job_id == job_id, JobEvent.id > after_id)
        .order_by(JobEvent.id)
        .limit(limit)
    )
    return list(rows)


def cancel_job(session: Session, tenant: Tenant, job_id: str) -> Job:
    """Cooperative: running tasks see the flag; a queued one is revoked without killing."""
    job = get_job(session, tenant, job_id)
    if job.status.is_final:
        return job
    job.cancel_requested = True
    state.add_event(session, job.id, "status", "cancel requested")
    if job.status is JobStatus.queued:
        state.finish_in_session(session, job, JobStatus.canceled, "canceled by request")
        session.commit()
        _revoke_quietly(job.celery_task_id)
    session.commit()
    return job


def _revoke_quietly(task_id: str | None) -> None:
    """A plain revoke (never terminate=True); the claim check makes it a courtesy only."""
    if not task_id:
        return
    from facespeech.jobs.celery_app import get_celery

    try:
        get_celery().control.revoke(task_id)
    except Exception:  # the embedded transport has no broadcast; the job row already says it
        log.info("revoke of %s not delivered; the task will see the canceled job", task_id)


def contact_sheet_url(store: ObjectStore, settings: Settings, dataset: Dataset) -> str | None:
    """A short-lived link to the preprocessing contact sheet, where one was made."""
    if dataset.status is not DatasetStatus.ready:
        return None
    if CONTACT_SHEET_NAME not in dataset.report.get("files", []):
        return None
    key = object_keys.dataset_contact_sheet(dataset.tenant_id, dataset.id)
    return store.presigned_get(key, settings.presign_expiry_s, f"{dataset.id}-contact-sheet.png")


def result_url(store: ObjectStore, settings: Settings, job: Job) -> str | None:
    if job.status is not JobStatus.succeeded or not job.result_key:
        return None
    suffix = PurePosixPath(job.result_key).suffix or ".mp4"  # .webm for a transparent render
    return store.presigned_get(job.result_key, settings.presign_expiry_s, f"{job.id}{suffix}")


def create_probe_job(session: Session, tenant: Tenant, seconds: float) -> Job:
    """A job that only sleeps: drives the queue, state machine and reconciler in fault and
    load tests (`bench/load_drain.py`). Not exposed over HTTP."""
    job = Job(tenant_id=tenant.id, kind=JobKind.probe, params={"seconds": seconds})
    session.add(job)
    session.flush()
    state.add_event(session, job.id, "status", "queued")
    _dispatch(session, job, "facespeech.probe")
    return job
