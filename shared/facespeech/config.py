"""The one Settings object. Nothing else in facespeech reads os.environ."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import Field, computed_field
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="FACESPEECH_", env_file=".env", extra="ignore")

    data_dir: Path = Path(".facespeech")
    # Empty means the embedded default: a SQLite file under data_dir.
    database_url_override: str = Field("", alias="FACESPEECH_DATABASE_URL")
    # Empty means the embedded default: kombu's filesystem transport under data_dir.
    broker_url_override: str = Field("", alias="FACESPEECH_BROKER_URL")

    store_backend: Literal["local", "s3"] = "local"
    s3_endpoint: str = "localhost:9000"
    s3_access_key: str = "minioadmin"
    s3_secret_key: str = "minioadmin"
    s3_bucket: str = "facespeech"
    s3_secure: bool = False
    s3_region: str = "us-east-1"

    device: Literal["auto", "cpu", "cuda"] = "auto"
    # BFM09_model_info.mat on the preprocess worker (users supply it): fit the Basel Face
    # Model to every dataset (photometric with nvdiffrast on a GPU). Empty: no 3DMM fit.
    bfm_model: str = ""
    # Signs the download links of the local store; set it in any shared deployment.
    secret_key: str = "dev-insecure-change-me"
    public_url: str = "http://127.0.0.1:8000"

    max_upload_bytes: int = 2 * 1024**3
    max_audio_seconds: float = 600.0
    min_audio_seconds: float = 0.5
    presign_expiry_s: int = 900
    job_max_attempts: int = 3
    # Above the longest task, so Redis does not redeliver a task that is still running.
    broker_visibility_timeout_s: int = 6 * 3600
    worker_concurrency: int = 1
    # Warm models per render worker process (LRU): weights, reference crops and paste masks
    # (about 0.3 GiB for a 512^2 `fast` model, 1.1 GiB at 1024^2), plus activations per batch.
    render_cache_models: int = Field(2, ge=1)
    render_cache_gib: float = Field(8.0, gt=0)

    # Reliability: a running job whose heartbeat is older than this lost its worker; the
    # reconciler (in every worker and in `facespeech serve`) retries or fails it.
    job_heartbeat_interval_s: float = Field(10.0, gt=0)
    job_heartbeat_timeout_s: float = Field(60.0, gt=0)
    # A queued job with no message in the broker for this long is queued again.
    job_queued_grace_s: float = Field(120.0, gt=0)
    reconcile_interval_s: float = Field(30.0, gt=0)
    # Partial uploads (local tmp/, S3 .staging/) older than this are removed by the reconciler.
    partial_upload_max_age_s: float = Field(6 * 3600, gt=0)
    # How long workers keep retrying a state write while the database is unreachable.
    db_retry_s: float = Field(60.0, ge=0)

    # Per-tenant limits (429 with Retry-After); 0 turns a limit off.
    tenant_max_active_jobs: int = Field(8, ge=0)
    tenant_max_storage_bytes: int = Field(50 * 1024**3, ge=0)
    tenant_rate_per_s: float = Field(50.0, ge=0)
    tenant_rate_burst: int = Field(100, ge=1)
    # Open event streams (GET /v1/jobs/{id}/events as SSE) per tenant and API process; each
    # polls the database once a second. A stream closes after event_stream_max_s and the
    # client resumes with Last-Event-ID.
    tenant_max_event_streams: int = Field(8, ge=0)
    event_stream_max_s: float = Field(3600.0, gt=0)
    # Browser origins allowed by CORS; empty (the default) sends no CORS headers at all.
    cors_origins: list[str] = Field(default_factory=list)
    # Video uploads outside these bounds are refused with 422 before any job starts.
    min_video_side: int = 64
    max_video_side: int = 4096
    max_video_fps: float = 120.0

    @computed_field  # type: ignore[prop-decorator]
    @property
    def database_url(self) -> str:
        if self.database_url_override:
            return self.database_url_override
        return f"sqlite:///{(self.data_dir / 'facespeech.db').resolve()}"

    @computed_field  # type: ignore[prop-decorator]
    @property
    def broker_url(self) -> str:
        return self.broker_url_override or "filesystem://"

    @property
    def is_embedded_broker(self) -> bool:
        return self.broker_url.startswith("filesystem://")

    @property
    def broker_dir(self) -> Path:
        return (self.data_dir / "broker").resolve()

    @property
    def store_root(self) -> Path:
        return (self.data_dir / "objects").resolve()

    @property
    def work_dir(self) -> Path:
        """Scratch space of workers: downloaded inputs, extracted datasets, run dirs."""
        return (self.data_dir / "work").resolve()


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings()
