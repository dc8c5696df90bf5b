"""Every query of the campaign domain. The dialect switch for the duplicate-skipping insert lives here."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import Integer, Select, String, Uuid, func, literal, select, true, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncSession

from clarion.kit.pagination import PageRows, keyset_page
from clarion.kit.repository import TenantRepository
from clarion.kit.sqljson import like_escape
from clarion.kit.types import UTCDateTime
from clarion.models import Campaign, CampaignRecipient

# Recipients that have not been handed to a provider yet: cancelling a campaign withdraws exactly these.
UNSENT_RECIPIENT_STATUSES = ("pending",)


def only_contacts(audience: Select[Any], contact_ids: list[uuid.UUID]) -> Select[Any]:
    """Narrow an audience select (whose first column is the contact id) to the given contacts."""
    return audience.where(audience.selected_columns[0].in_(contact_ids))


class CampaignRepo(TenantRepository[Campaign]):
    model = Campaign
    label = "campaign"

    async def list_page(self, *, status: str | None, channel: str | None, type_: str | None, q: str | None,
                        created_from: datetime | None, created_to: datetime | None,
                        limit: int, cursor: str | None) -> PageRows[Campaign]:
        stmt = self.scoped()
        if status:
            stmt = stmt.where(Campaign.status == status)
        if channel:
            stmt = stmt.where(Campaign.channel == channel)
        if type_:
            stmt = stmt.where(Campaign.type == type_)
        if q:
            stmt = stmt.where(func.lower(Campaign.name).like(f"%{like_escape(q.lower())}%", escape="\\"))
        if created_from is not None:
            stmt = stmt.where(Campaign.created_at >= created_from)
        if created_to is not None:
            stmt = stmt.where(Campaign.created_at <= created_to)
        # uuid7 ids sort by creation time, so "newest first" is a descending keyset on id.
        return await keyset_page(self.session, stmt, Campaign.id, limit=limit, cursor=cursor, descending=True,
                                 key_type=uuid.UUID)

    async def add_to_counters(self, campaign: Campaign, **deltas: int) -> None:
        """Atomic `counter = counter + delta` in SQL (no lost updates between concurrent requests)."""
        deltas = {name: delta for name, delta in deltas.items() if delta}
        if not deltas:
            return
        values = {name: getattr(Campaign, name) + delta for name, delta in deltas.items()}
        await self.session.execute(
            update(Campaign).where(Campaign.tenant_id == self.tenant_id, Campaign.id == campaign.id)
            .values(**values).execution_options(synchronize_session=False))
        await self.session.refresh(campaign, attribute_names=list(deltas))


class RecipientRepo(TenantRepository[CampaignRecipient]):
    model = CampaignRecipient
    label = "recipient"

    def _insert_ignoring_duplicates(self) -> Any:
        """INSERT … ON CONFLICT DO NOTHING: same SQL on both databases, built by each dialect's insert()."""
        table = CampaignRecipient.__table__
        if self.session.get_bind().dialect.name == "postgresql":
            return postgresql.insert(table)
        return sqlite.insert(table)

    async def insert_from_audience(self, campaign_id: uuid.UUID, audience: Select[Any], *, only_if: Any,
                                   at: datetime) -> int:
        """One INSERT … SELECT of the audience's contacts (id, email, phone) that satisfy `only_if`.

        Contacts already in the campaign are skipped by UNIQUE(campaign_id, contact_id). Returns the rows added.
        """
        source = audience.where(only_if).order_by(None).subquery("audience")
        contact_id, email, phone = list(source.c)[:3]
        rows = select(
            literal(self.tenant_id, Uuid()), literal(campaign_id, Uuid()), contact_id, email, phone,
            literal("pending", String()), literal(0, Integer()), literal(0, Integer()), literal(0, Integer()),
            literal(at, UTCDateTime()), literal(at, UTCDateTime()),
        ).where(true())  # SQLite reads "FROM x ON CONFLICT" as a join unless the SELECT has a WHERE
        columns = ["tenant_id", "campaign_id", "contact_id", "email", "phone", "status",
                   "open_count", "click_count", "retry_count", "created_at", "updated_at"]
        stmt = (self._insert_ignoring_duplicates().from_select(columns, rows)
                .on_conflict_do_nothing(index_elements=["campaign_id", "contact_id"]))
        # SQLAlchemy keeps an INSERT's rowcount only when asked (UPDATE/DELETE always keep theirs).
        result = await self.session.execute(stmt, execution_options={"preserve_rowcount": True})
        return int(result.rowcount)

    async def count_audience(self, audience: Select[Any]) -> int:
        source = audience.order_by(None).subquery("audience")
        return int((await self.session.execute(select(func.count()).select_from(source))).scalar_one())

    async def count_already_in(self, campaign_id: uuid.UUID, audience: Select[Any]) -> int:
        """How many of the audience's contacts are recipients of the campaign already."""
        contact_ids = audience.order_by(None).subquery("audience")
        stmt = self.scoped(select(func.count())).where(
            CampaignRecipient.campaign_id == campaign_id,
            CampaignRecipient.contact_id.in_(select(list(contact_ids.c)[0])),
        )
        return int((await self.session.execute(stmt)).scalar_one())

    async def ids_in_audience(self, audience: Select[Any], ids: list[uuid.UUID]) -> set[uuid.UUID]:
        """Which of `ids` are contacts of the audience (for explicit ids: which belong to this tenant)."""
        if not ids:
            return set()
        source = audience.order_by(None).subquery("audience")
        contact_id = list(source.c)[0]
        result = await self.session.execute(select(contact_id).where(contact_id.in_(ids)))
        return set(result.scalars().all())

    async def cancel_unsent(self, campaign_id: uuid.UUID, *, at: datetime) -> int:
        result = await self.session.execute(
            update(CampaignRecipient)
            .where(CampaignRecipient.tenant_id == self.tenant_id, CampaignRecipient.campaign_id == campaign_id,
                   CampaignRecipient.status.in_(UNSENT_RECIPIENT_STATUSES))
            .values(status="cancelled", updated_at=at)
            .execution_options(synchronize_session=False))
        return int(result.rowcount or 0)

    async def list_page(self, campaign_id: uuid.UUID, *, status: str | None, limit: int,
                        cursor: str | None) -> PageRows[CampaignRecipient]:
        stmt = self.scoped().where(CampaignRecipient.campaign_id == campaign_id)
        if status:
            stmt = stmt.where(CampaignRecipient.status == status)
        return await keyset_page(self.session, stmt, CampaignRecipient.id, limit=limit, cursor=cursor, key_type=int)
