"""Tenants, API keys and authentication."""

from __future__ import annotations

import hashlib
import hmac
import secrets
import uuid
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from clarion.errors import Forbidden, Unauthorized
from clarion.kit.clock import utcnow
from clarion.models import ApiKey, DomainEvent, Tenant
from clarion.tenancy import repository as repo
from clarion.tenancy.schemas import ApiKeyCreate, TenantUpdate

KEY_PREFIX = "clk_"
# last_used_at is written at most this often per key, so reads don't turn into writes.
TOUCH_INTERVAL = timedelta(seconds=60)


@dataclass(frozen=True)
class AuthContext:
    tenant_id: uuid.UUID
    api_key_id: uuid.UUID
    scopes: frozenset[str]

    @property
    def can_write(self) -> bool:
        return "write" in self.scopes


def _hash(secret: str) -> str:
    # Keys carry 256 bits of randomness, so a fast hash is enough; no password stretching needed.
    return hashlib.sha256(secret.encode()).hexdigest()


def _split(key: str) -> tuple[str, str] | None:
    if not key.startswith(KEY_PREFIX):
        return None
    body = key[len(KEY_PREFIX):]
    ident, _, secret = body.partition("_")
    if not ident or not secret:
        return None
    return KEY_PREFIX + ident, secret


async def create_tenant(session: AsyncSession, name: str, *, plan: str = "starter",
                        default_region: str | None = None) -> Tenant:
    tenant = repo.TenantRepo(session).add(Tenant(name=name, plan=plan, default_region=default_region))
    await session.flush()
    return tenant


async def get_tenant(session: AsyncSession, tenant_id: uuid.UUID) -> Tenant:
    tenant = await repo.TenantRepo(session).find(tenant_id)
    if tenant is None:
        raise Unauthorized()
    return tenant


async def update_tenant(session: AsyncSession, tenant_id: uuid.UUID, data: TenantUpdate) -> Tenant:
    tenant = await get_tenant(session, tenant_id)
    for field, value in data.model_dump(exclude_unset=True).items():
        setattr(tenant, field, value)
    await session.flush()
    return tenant


async def create_api_key(session: AsyncSession, tenant_id: uuid.UUID, data: ApiKeyCreate) -> tuple[ApiKey, str]:
    """Returns the stored key and the full secret, which is never retrievable again."""
    ident = secrets.token_hex(5)
    secret = secrets.token_urlsafe(32)
    prefix = KEY_PREFIX + ident
    key = repo.ApiKeyRepo(session, tenant_id).add(
        ApiKey(name=data.name, prefix=prefix, key_hash=_hash(secret), scopes=sorted(set(data.scopes)))
    )
    await session.flush()
    return key, f"{prefix}_{secret}"


async def list_api_keys(session: AsyncSession, tenant_id: uuid.UUID) -> list[ApiKey]:
    return await repo.ApiKeyRepo(session, tenant_id).list_all()


async def revoke_api_key(session: AsyncSession, tenant_id: uuid.UUID, key_id: uuid.UUID) -> ApiKey:
    key = await repo.ApiKeyRepo(session, tenant_id).get(key_id)
    if key.revoked_at is None:
        key.revoked_at = utcnow()
        await session.flush()
    return key


async def authenticate(session: AsyncSession, authorization: str | None) -> AuthContext:
    if not authorization:
        raise Unauthorized()
    scheme, _, token = authorization.partition(" ")
    parts = _split(token.strip()) if scheme.lower() == "bearer" else None
    if parts is None:
        raise Unauthorized("Malformed API key: expected Authorization: Bearer clk_…")
    prefix, secret = parts
    key = await repo.find_key_by_prefix(session, prefix)
    if key is None or not hmac.compare_digest(key.key_hash, _hash(secret)):
        raise Unauthorized("Unknown API key")
    if key.revoked_at is not None:
        raise Unauthorized("This API key has been revoked")
    now = utcnow()
    if key.last_used_at is None or now - key.last_used_at > TOUCH_INTERVAL:
        await repo.touch_key(session, key.id, now)
    return AuthContext(tenant_id=key.tenant_id, api_key_id=key.id, scopes=frozenset(key.scopes))


def require_write(auth: AuthContext) -> AuthContext:
    if not auth.can_write:
        raise Forbidden("This API key is read-only; this request needs the 'write' scope")
    return auth


def emit(session: AsyncSession, tenant_id: uuid.UUID, name: str, payload: dict[str, Any]) -> None:
    """Record a domain event (e.g. crm.campaign.started) in the caller's transaction."""
    repo.DomainEventRepo(session, tenant_id).add(DomainEvent(name=name, payload=payload))
