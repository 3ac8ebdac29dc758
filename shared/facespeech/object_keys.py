"""Where things live in the object store. Every key starts with the tenant's prefix."""

from __future__ import annotations

import re

_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


def safe_filename(name: str, default: str = "upload") -> str:
    """A file name that is safe as a key segment and in a Content-Disposition header."""
    base = name.replace("\\", "/").rsplit("/", 1)[-1]
    cleaned = _UNSAFE.sub("_", base).strip("._")[:100]
    return cleaned or default


def tenant_prefix(tenant_id: str) -> str:
    return f"tenants/{tenant_id}/"


def dataset_prefix(tenant_id: str, dataset_id: str) -> str:
    """Everything of one dataset: the upload, its preprocessed form, the report."""
    return f"{tenant_prefix(tenant_id)}datasets/{dataset_id}/"


def model_prefix(tenant_id: str, model_id: str) -> str:
    return f"{tenant_prefix(tenant_id)}models/{model_id}/"


def job_prefix(tenant_id: str, job_id: str) -> str:
    """Everything of one job: checkpoints, render input and output."""
    return f"{tenant_prefix(tenant_id)}jobs/{job_id}/"


def dataset_source(tenant_id: str, dataset_id: str, filename: str) -> str:
    return f"{dataset_prefix(tenant_id, dataset_id)}source/{safe_filename(filename)}"


def dataset_processed(tenant_id: str, dataset_id: str) -> str:
    return f"{dataset_prefix(tenant_id, dataset_id)}processed.tar"


def dataset_report(tenant_id: str, dataset_id: str) -> str:
    return f"{dataset_prefix(tenant_id, dataset_id)}report.json"


def dataset_contact_sheet(tenant_id: str, dataset_id: str) -> str:
    return f"{dataset_prefix(tenant_id, dataset_id)}contact_sheet.png"


def job_checkpoints(tenant_id: str, job_id: str) -> str:
    return f"{job_prefix(tenant_id, job_id)}checkpoints/"


def model_checkpoint(tenant_id: str, model_id: str) -> str:
    return f"{model_prefix(tenant_id, model_id)}model.pt"


def render_audio(tenant_id: str, job_id: str, filename: str) -> str:
    return f"{job_prefix(tenant_id, job_id)}input/{safe_filename(filename, 'audio')}"


def render_video(tenant_id: str, job_id: str, suffix: str = ".mp4") -> str:
    """Where a render's video goes: render.mp4, or render.webm for a transparent one."""
    return f"{job_prefix(tenant_id, job_id)}render{suffix}"
