"""Dependencies as named types, declared once and overridden by tests."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated

from fastapi import Depends, Request
from sqlalchemy.orm import Session

from facespeech.api.limits import check_rate
from facespeech.api.problems import Problem
from facespeech.api.security import tenant_for_key
from facespeech.config import Settings, get_settings
from facespeech.db.models import Tenant
from facespeech.db.session import session_scope
from facespeech.storage import ObjectStore, get_store


def get_session() -> Iterator[Session]:
    with session_scope() as session:
        yield session


async def _settings() -> Settings:
    # async: FastAPI would run a plain function in the thread pool, a hop per request.
    return get_settings()


# scope "function": the transaction commits when the route returns, before the answer is sent.
# FastAPI's default runs it after sending, so a client could act on a 204 whose deletion the
# database then failed to commit, or read the state from before it in its next request.
SessionDep = Annotated[Session, Depends(get_session, scope="function")]
SettingsDep = Annotated[Settings, Depends(_settings)]


async def _store() -> ObjectStore:
    return get_store()  # built once per process, then cached


StoreDep = Annotated[ObjectStore, Depends(_store)]


def current_tenant(request: Request, session: SessionDep, settings: SettingsDep) -> Tenant:
    header = request.headers.get("authorization", "")
    scheme, _, secret = header.partition(" ")
    if scheme.lower() != "bearer" or not secret:
        raise Problem(401, "Unauthorized", "send 'Authorization: Bearer <api key>'")
    tenant = tenant_for_key(session, secret.strip())
    if tenant is None:
        raise Problem(401, "Unauthorized", "unknown or revoked API key")
    check_rate(tenant, settings)
    return tenant


CurrentTenant = Annotated[Tenant, Depends(current_tenant)]
