"""What a tenant uses of its limits."""

from __future__ import annotations

from fastapi import APIRouter

from facespeech.api import limits
from facespeech.api.deps import CurrentTenant, SessionDep, SettingsDep
from facespeech.api.problems import PROBLEM_RESPONSES
from facespeech.api.schemas import UsagePublic

router = APIRouter(prefix="/v1", tags=["usage"], responses=PROBLEM_RESPONSES)


@router.get("/usage", response_model=UsagePublic)
def read_usage(tenant: CurrentTenant, session: SessionDep, settings: SettingsDep) -> UsagePublic:
    """Stored bytes and active jobs against the tenant's limits, and its request rate."""
    return UsagePublic(
        stored_bytes=limits.stored_bytes(session, tenant),
        max_storage_bytes=settings.tenant_max_storage_bytes,
        active_jobs=limits.active_jobs(session, tenant),
        max_active_jobs=settings.tenant_max_active_jobs,
        rate_per_s=settings.tenant_rate_per_s,
        rate_burst=settings.tenant_rate_burst,
    )
