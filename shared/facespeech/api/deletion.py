"""Deleting a dataset (everything learnt from the person in it) or one model.

The rows stay, marked `deleted`, so job history and foreign keys hold; every stored object
goes, and with it the bytes the tenant's storage quota counts. Work still queued or running
on them must be canceled first (409): a worker would otherwise write into what is deleted.
"""

from __future__ import annotations

from sqlalchemy import delete, or_, select
from sqlalchemy.orm import Session

from facespeech import object_keys
from facespeech.api.problems import Problem
from facespeech.api.service import get_dataset, get_model
from facespeech.db.models import (
    Artifact,
    DatasetStatus,
    Job,
    JobKind,
    ModelStatus,
    Tenant,
    TrainedModel,
)
from facespeech.storage import ObjectStore


def delete_dataset(session: Session, store: ObjectStore, tenant: Tenant, dataset_id: str) -> None:
    """The upload, its preprocessed form, every model trained on it, their training
    checkpoints and the videos rendered with them."""
    dataset = get_dataset(session, tenant, dataset_id)
    jobs = list(session.scalars(select(Job).where(Job.dataset_id == dataset.id)))
    _refuse_if_active(jobs, f"dataset {dataset.id}")
    prefixes = [object_keys.dataset_prefix(tenant.id, dataset.id)]
    models = session.scalars(select(TrainedModel).where(TrainedModel.dataset_id == dataset.id))
    for model in models:
        prefixes.append(object_keys.model_prefix(tenant.id, model.id))
        model.status, model.checkpoint_key = ModelStatus.deleted, None
    for job in jobs:
        prefixes.append(object_keys.job_prefix(tenant.id, job.id))
        job.result_key = None
    _erase(session, store, tenant.id, prefixes)
    dataset.status, dataset.size_bytes, dataset.processed_key = DatasetStatus.deleted, 0, None


def delete_model(session: Session, store: ObjectStore, tenant: Tenant, model_id: str) -> None:
    """The model's weights and its training checkpoints; videos rendered with it stay."""
    model = get_model(session, tenant, model_id)
    jobs = list(session.scalars(select(Job).where(Job.model_id == model.id)))
    _refuse_if_active(jobs, f"model {model.id}")
    training = [job for job in jobs if job.kind is JobKind.train]
    prefixes = [object_keys.model_prefix(tenant.id, model.id)]
    prefixes += [object_keys.job_checkpoints(tenant.id, job.id) for job in training]
    _erase(session, store, tenant.id, prefixes)
    model.status, model.checkpoint_key = ModelStatus.deleted, None


def _refuse_if_active(jobs: list[Job], what: str) -> None:
    active = [job for job in jobs if not job.status.is_final]
    if active:
        names = ", ".join(f"{job.kind} job {job.id} ({job.status})" for job in active[:3])
        raise Problem(409, "In Use", f"{what} is in use by {names}; cancel it first")


def _erase(session: Session, store: ObjectStore, tenant_id: str, prefixes: list[str]) -> None:
    for prefix in prefixes:
        store.delete_prefix(prefix)
    session.execute(delete(Artifact).where(
        Artifact.tenant_id == tenant_id,
        or_(*(Artifact.key.startswith(prefix, autoescape=True) for prefix in prefixes)),
    ))
