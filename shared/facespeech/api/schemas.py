"""Request and response schemas. What a client may set is listed here, nothing more."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field


def _as_utc(moment: datetime) -> datetime:
    # SQLite hands back naive datetimes; every stored time is UTC, and RFC 3339 wants an offset.
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


UtcDatetime = Annotated[datetime, AfterValidator(_as_utc)]
# Databases store 64-bit signed integers; a larger number in a query is a 422, not a 500.
MAX_DB_INT = 2**63 - 1
Id = Field(min_length=1, max_length=32, pattern=r"^[0-9a-f]{1,32}$")


class Public(BaseModel):
    model_config = ConfigDict(from_attributes=True)


class DatasetPublic(Public):
    id: str
    name: str
    status: str
    source_kind: str
    size_bytes: int
    sha256: str
    report: dict[str, Any]
    error: str | None
    created_at: UtcDatetime
    # a PNG of sampled frames with landmarks and masks drawn, once preprocessed
    contact_sheet_url: str | None = None


class DatasetsPublic(BaseModel):
    data: list[DatasetPublic]
    count: int


class TrainingRunCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    dataset_id: str = Id
    preset: Literal["tiny", "fast", "quality"] = "tiny"
    overrides: dict[str, Any] = Field(default_factory=dict, max_length=64)


class RenderOptions(BaseModel):
    """What a client may choose about a render (the `options` JSON form field)."""

    model_config = ConfigDict(extra="forbid")
    size: int | None = Field(None, ge=256, le=1024, multiple_of=2)  # None: the model's size
    fps: int = Field(25, ge=10, le=60)
    # transparent: the person alone, as WebM (VP9 with alpha) instead of mp4
    background: Literal["reference", "still", "green", "transparent"] = "reference"
    motion: Literal["pingpong", "still"] = "pingpong"
    blink_rate: float | None = Field(None, ge=0, le=60)  # per minute; None: the reference's


class JobPublic(Public):
    id: str
    kind: str
    status: str
    stage: str
    progress: float
    eta_seconds: float | None
    params: dict[str, Any]
    metrics: dict[str, Any]
    error: str | None
    attempt: int
    dataset_id: str | None
    model_id: str | None
    created_at: UtcDatetime
    started_at: UtcDatetime | None
    finished_at: UtcDatetime | None
    result_url: str | None = None


class JobsPublic(BaseModel):
    data: list[JobPublic]
    count: int


class JobEventPublic(Public):
    id: int
    at: UtcDatetime
    kind: str
    message: str
    data: dict[str, Any]


class JobEventsPublic(BaseModel):
    data: list[JobEventPublic]
    count: int


class ModelPublic(Public):
    id: str
    status: str
    preset: str
    dataset_id: str
    job_id: str
    metrics: dict[str, Any]
    created_at: UtcDatetime


class ModelsPublic(BaseModel):
    data: list[ModelPublic]
    count: int


class PresignedUploadCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    filename: str = Field(min_length=1, max_length=255)
    size_bytes: int = Field(gt=0)


class PresignedUploadPublic(BaseModel):
    dataset_id: str
    url: str
    fields: dict[str, str]
    max_bytes: int
    expires_in: int


class UsagePublic(BaseModel):
    """What the tenant uses against its limits; a limit of 0 means none."""

    stored_bytes: int
    max_storage_bytes: int
    active_jobs: int
    max_active_jobs: int
    rate_per_s: float
    rate_burst: int


class Health(BaseModel):
    status: str
    checks: dict[str, str] = Field(default_factory=dict)
