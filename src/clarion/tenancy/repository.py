from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from clarion.kit.repository import TenantRepository
from clarion.models import ApiKey, DomainEvent, Tenant


class TenantRepo:
    """Tenants are the scope itself, so this one repository is not tenant-scoped."""

    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    def add(self, tenant: Tenant) -> Tenant:
        self.session.add(tenant)
        return tenant

    async def find(self, tenant_id: uuid.UUID) -> Tenant | None:
        return await self.session.get(Tenant, tenant_id)


class ApiKeyRepo(TenantRepository[ApiKey]):
    model = ApiKey
    label = "API key"

    async def list_all(self) -> list[ApiKey]:
        result = await self.session.execute(self.scoped().order_by(ApiKey.created_at))
        return list(result.scalars().all())


async def find_key_by_prefix(session: AsyncSession, prefix: str) -> ApiKey | None:
    """Authentication runs before a tenant is known: the one unscoped lookup, by the key's public prefix."""
    result = await session.execute(select(ApiKey).where(ApiKey.prefix == prefix))
    return result.scalar_one_or_none()


async def touch_key(session: AsyncSession, key_id: uuid.UUID, at: datetime) -> None:
    await session.execute(update(ApiKey).where(ApiKey.id == key_id).values(last_used_at=at))


class DomainEventRepo(TenantRepository[DomainEvent]):
    model = DomainEvent
    label = "event"
