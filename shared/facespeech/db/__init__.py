"""The database: SQLAlchemy models, sessions, and migrations applied on start."""

from facespeech.db.migrate import upgrade_head
from facespeech.db.models import (
    ApiKey,
    Artifact,
    Base,
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
from facespeech.db.session import (
    engine_for,
    get_engine,
    make_engine,
    session_factory,
    session_scope,
)

__all__ = [
    "ApiKey",
    "Artifact",
    "Base",
    "Dataset",
    "DatasetStatus",
    "Job",
    "JobEvent",
    "JobKind",
    "JobStatus",
    "ModelStatus",
    "Tenant",
    "TrainedModel",
    "engine_for",
    "get_engine",
    "make_engine",
    "session_factory",
    "session_scope",
    "upgrade_head",
]
