"""Every query of the tracking domain, on its own tables. Recipients and campaigns change through
clarion.campaign.sending, consent through clarion.audience.service."""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from datetime import datetime
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from clarion.kit.repository import TenantRepository, dialect_insert
from clarion.models import BounceRecord, CampaignRecipient, Conversion, TrackingClient


class SeenClients:
    """Clients seen per contact. Unscoped by design: the event writer serves every tenant in one batch, and
    each row it reads or writes is keyed by a contact id taken from a verified recipient."""

    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def seen_among(self, clients: set[tuple[uuid.UUID, str]]) -> set[tuple[uuid.UUID, str]]:
        """Which of these (contact id, client key) pairs were seen before: one query."""
        if not clients:
            return set()
        stmt = select(TrackingClient.contact_id, TrackingClient.client_key).where(
            TrackingClient.contact_id.in_({c for c, _ in clients}),
            TrackingClient.client_key.in_({k for _, k in clients}))
        return {(c, k) for c, k in (await self.session.execute(stmt)).all()} & clients

    async def remember(self, rows: Iterable[tuple[uuid.UUID, uuid.UUID, str, datetime]]) -> None:
        """(tenant_id, contact_id, client_key, first_seen_at) rows; ones already known are left as they are.
        One executemany: a multi-row VALUES would be compiled anew for every batch size."""
        values = [{"tenant_id": t, "contact_id": c, "client_key": k, "first_seen_at": at} for t, c, k, at in rows]
        if not values:
            return
        stmt = dialect_insert(self.session, TrackingClient.__table__).on_conflict_do_nothing(
            index_elements=["contact_id", "client_key"])
        await self.session.execute(stmt, values)


class ConversionRepo(TenantRepository[Conversion]):
    model = Conversion
    label = "conversion"

    async def by_idempotency_key(self, key: str) -> Conversion | None:
        stmt = self.scoped().where(Conversion.idempotency_key == key)
        return (await self.session.execute(stmt)).scalar_one_or_none()

    async def insert_once(self, values: dict[str, Any]) -> int | None:
        """Insert the conversion unless its idempotency key is taken; its id, or None when it was a replay."""
        stmt = (dialect_insert(self.session, Conversion.__table__)
                .values(tenant_id=self.tenant_id, **values)
                .on_conflict_do_nothing(index_elements=["tenant_id", "idempotency_key"])
                .returning(Conversion.__table__.c.id))
        return (await self.session.execute(stmt)).scalar_one_or_none()


class BounceRepo(TenantRepository[BounceRecord]):
    model = BounceRecord
    label = "bounce"

    async def count_soft_since(self, contact_id: uuid.UUID, since: datetime) -> int:
        stmt = select(func.count()).select_from(BounceRecord).where(
            BounceRecord.tenant_id == self.tenant_id, BounceRecord.contact_id == contact_id,
            BounceRecord.kind == "soft", BounceRecord.occurred_at >= since)
        return int((await self.session.execute(stmt)).scalar_one())


async def recipient_id_for_contact(session: AsyncSession, tenant_id: uuid.UUID, campaign_id: uuid.UUID,
                                   contact_id: uuid.UUID) -> int | None:
    """The id of a contact's recipient row in a campaign (a read; recipients change only through
    clarion.campaign.sending, which this id is then handed to)."""
    stmt = select(CampaignRecipient.id).where(CampaignRecipient.tenant_id == tenant_id,
                                              CampaignRecipient.campaign_id == campaign_id,
                                              CampaignRecipient.contact_id == contact_id)
    return (await session.execute(stmt)).scalar_one_or_none()
