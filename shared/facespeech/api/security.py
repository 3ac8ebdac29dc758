"""API keys: random secrets shown once, stored as sha256, scoped to one tenant."""

from __future__ import annotations

import hashlib
import secrets

from sqlalchemy import or_, select, update
from sqlalchemy.orm import Session

from facespeech.db.models import ApiKey, Tenant

KEY_PREFIX = "fsk_"


def hash_key(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def create_tenant_with_key(session: Session, name: str) -> tuple[Tenant, str]:
    tenant = session.scalar(select(Tenant).where(Tenant.name == name))
    if tenant is None:
        tenant = Tenant(name=name)
        session.add(tenant)
        session.flush()
    return tenant, issue_key(session, tenant)


def issue_key(session: Session, tenant: Tenant) -> str:
    secret = KEY_PREFIX + secrets.token_urlsafe(32)
    session.add(ApiKey(tenant_id=tenant.id, key_hash=hash_key(secret), prefix=secret[:10]))
    session.flush()
    return secret


def tenant_for_key(session: Session, secret: str) -> Tenant | None:
    """The tenant of an unrevoked key, in one query: it runs on every request."""
    return session.scalar(
        select(Tenant)
        .join(ApiKey, ApiKey.tenant_id == Tenant.id)
        .where(ApiKey.key_hash == hash_key(secret), ApiKey.revoked.is_(False))
    )


def revoke_key(session: Session, key_or_prefix: str) -> int:
    """Revoke the key given in full, or every key that starts with the printed prefix;
    the number revoked. A revoked key answers 401 from the next request on."""
    matches = or_(ApiKey.key_hash == hash_key(key_or_prefix), ApiKey.prefix == key_or_prefix)
    result = session.execute(
        update(ApiKey).where(matches, ApiKey.revoked.is_(False)).values(revoked=True)
    )
    return int(getattr(result, "rowcount", 0))
