"""Every query of the campaign domain. The dialect switch for the duplicate-skipping insert lives here."""

from __future__ import annotations

import uuid
from datetime import date, datetime
from typing import Any

from sqlalchemy import (
    Date,
    Integer,
    Select,
    String,
    Uuid,
    and_,
    bindparam,
    column,
    delete,
    func,
    insert,
    literal,
    select,
    text,
    true,
    update,
)

from clarion.kit.pagination import PageRows, keyset_page
from clarion.kit.repository import TenantRepository, dialect_insert, in_chunks
from clarion.kit.sqljson import like_escape
from clarion.kit.types import UTCDateTime
from clarion.models import Campaign, CampaignEvent, CampaignRecipient, CampaignSendSchedule, Contact

# Days (or date × timezone pairs) per planning statement: 3 parameters each stays under SQLite's 32,766.
_DAYS_PER_STATEMENT = 4000

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
        return dialect_insert(self.session, CampaignRecipient.__table__)

    async def insert_from_audience(self, campaign_id: uuid.UUID, audience: Select[Any], *, only_if: Any,
                                   at: datetime) -> int:
        """One INSERT … SELECT of the audience's contacts (id, email, phone) that satisfy `only_if`, oldest first.

        Contacts already in the campaign are skipped by UNIQUE(campaign_id, contact_id). Returns the rows added.
        """
        source = audience.where(only_if).order_by(None).subquery("audience")
        contact_id, email, phone = list(source.c)[:3]
        rows = select(
            literal(self.tenant_id, Uuid()), literal(campaign_id, Uuid()), contact_id, email, phone,
            literal("pending", String()), literal(0, Integer()), literal(0, Integer()), literal(0, Integer()),
            literal(at, UTCDateTime()), literal(at, UTCDateTime()),
        ).where(true()).order_by(contact_id)
        # WHERE: SQLite reads "FROM x ON CONFLICT" as a join unless the SELECT has one. ORDER BY: recipient ids (and
        # so the send order) follow the contacts' creation order, not whatever order the planner scanned them in.
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
            CampaignRecipient.contact_id.in_(select(next(iter(contact_ids.c)))),
        )
        return int((await self.session.execute(stmt)).scalar_one())

    async def ids_in_audience(self, audience: Select[Any], ids: list[uuid.UUID]) -> set[uuid.UUID]:
        """Which of `ids` are contacts of the audience (for explicit ids: which belong to this tenant)."""
        if not ids:
            return set()
        source = audience.order_by(None).subquery("audience")
        contact_id = next(iter(source.c))
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


def inline_table(name: str, columns: list[tuple[str, Any]], rows: list[tuple[Any, ...]]) -> Any:
    """A derived table of literal rows, `(VALUES …)`, usable in joins on both databases.

    Written as `SELECT column1 AS a, … FROM (VALUES …)`, the one spelling SQLite and PostgreSQL share (SQLite
    rejects a column list after the alias). Callers keep rows × columns under SQLite's 32,766 parameters.
    """
    params: list[Any] = []
    tuples: list[str] = []
    for i, row in enumerate(rows):
        keys = []
        for j, value in enumerate(row):
            key = f"{name}_{i}_{j}"
            params.append(bindparam(key, value, type_=columns[j][1]))
            keys.append(f":{key}")
        tuples.append(f"({', '.join(keys)})")
    aliases = ", ".join(f"v.column{j + 1} AS {col}" for j, (col, _) in enumerate(columns))
    sql = text(f"SELECT {aliases} FROM (VALUES {', '.join(tuples)}) AS v").bindparams(*params)
    return sql.columns(*[column(col, type_) for col, type_ in columns]).subquery(name)


class PlanningRepo(TenantRepository[CampaignRecipient]):
    """The set-based statements of send planning: day layout, local send times, the per-day schedule."""

    model = CampaignRecipient
    label = "recipient"

    def _pending(self, campaign_id: uuid.UUID) -> Any:
        return and_(CampaignRecipient.tenant_id == self.tenant_id, CampaignRecipient.campaign_id == campaign_id,
                    CampaignRecipient.status == "pending")

    async def count_pending(self, campaign_id: uuid.UUID, *, unplanned_only: bool = False) -> int:
        stmt = select(func.count()).select_from(CampaignRecipient).where(self._pending(campaign_id))
        if unplanned_only:
            stmt = stmt.where(CampaignRecipient.send_after.is_(None))
        return int((await self.session.execute(stmt)).scalar_one())

    async def assign_days(self, campaign_id: uuid.UUID, *, offset: int, per_day: int | None,
                          days: list[tuple[int, date, datetime]], at: datetime) -> None:
        """Give every pending recipient (in id order) day `(rank + offset) // per_day` of `days` (index, date,
        UTC send_after): one UPDATE with ROW_NUMBER() per chunk of days, never a loop over recipients."""
        r = CampaignRecipient
        if per_day is None:
            _, day, send_after = days[0]
            await self.session.execute(
                update(r).where(self._pending(campaign_id))
                .values(scheduled_send_date=day, send_after=send_after, updated_at=at)
                .execution_options(synchronize_session=False))
            return
        ranked = (select(r.id.label("rid"),
                         ((func.row_number().over(order_by=r.id) - 1 + offset) // per_day).label("day_idx"))
                  .where(self._pending(campaign_id)).subquery("ranked"))
        for chunk in in_chunks(days, _DAYS_PER_STATEMENT):
            table = inline_table("days", [("idx", Integer()), ("send_date", Date()), ("send_after", UTCDateTime())],
                                 chunk)
            await self.session.execute(
                update(r).where(r.id == ranked.c.rid, ranked.c.day_idx == table.c.idx)
                .values(scheduled_send_date=table.c.send_date, send_after=table.c.send_after, updated_at=at)
                .execution_options(synchronize_session=False))

    async def local_days(self, campaign_id: uuid.UUID) -> list[tuple[date, str]]:
        """Distinct (send date, contact timezone) pairs of the pending recipients whose contact has a timezone."""
        stmt = (select(CampaignRecipient.scheduled_send_date, Contact.timezone).distinct()
                .join(Contact, Contact.id == CampaignRecipient.contact_id)
                .where(self._pending(campaign_id), Contact.timezone.is_not(None),
                       CampaignRecipient.scheduled_send_date.is_not(None)))
        return [(row[0], row[1]) for row in (await self.session.execute(stmt)).all()]

    async def set_local_send_after(self, campaign_id: uuid.UUID, instants: list[tuple[date, str, datetime]],
                                   *, at: datetime) -> None:
        r = CampaignRecipient
        for chunk in in_chunks(instants, _DAYS_PER_STATEMENT):
            table = inline_table("local", [("send_date", Date()), ("tz", String()), ("send_after", UTCDateTime())],
                                 chunk)
            await self.session.execute(
                update(r).where(self._pending(campaign_id), r.contact_id == Contact.id,
                                Contact.timezone == table.c.tz, r.scheduled_send_date == table.c.send_date)
                .values(send_after=table.c.send_after, updated_at=at)
                .execution_options(synchronize_session=False))

    async def replace_schedule(self, campaign_id: uuid.UUID, *, from_date: date, days: list[tuple[date, int]],
                               at: datetime) -> None:
        """The per-day rows from `from_date` on become `days` (date, recipients planned). A day that already
        sent some keeps its history: its planned size is what it sent plus what is planned now."""
        sch = CampaignSendSchedule
        mine = and_(sch.tenant_id == self.tenant_id, sch.campaign_id == campaign_id)
        await self.session.execute(
            delete(sch).where(mine, sch.send_date >= from_date, sch.messages_sent == 0)
            .execution_options(synchronize_session=False))
        kept = set((await self.session.execute(
            select(sch.send_date).where(mine, sch.send_date >= from_date))).scalars().all())
        for day, planned in days:
            if day in kept:
                await self.session.execute(
                    update(sch).where(mine, sch.send_date == day)
                    .values(batch_size=sch.messages_sent + planned, messages_remaining=planned,
                            status="pending" if planned else "completed", updated_at=at)
                    .execution_options(synchronize_session=False))
        new = [{"tenant_id": self.tenant_id, "campaign_id": campaign_id, "send_date": day, "batch_number": 1,
                "batch_size": planned, "messages_sent": 0, "messages_remaining": planned, "status": "pending",
                "created_at": at, "updated_at": at} for day, planned in days if day not in kept]
        if new:
            await self.session.execute(insert(sch), new)
        # Days before the new plan that still expected sends will not get them any more.
        await self.session.execute(
            update(sch).where(mine, sch.send_date >= from_date, sch.messages_remaining > 0,
                              sch.send_date.not_in([day for day, _ in days] or [from_date]))
            .values(messages_remaining=0, status="completed", updated_at=at)
            .execution_options(synchronize_session=False))

    async def schedule(self, campaign_id: uuid.UUID) -> list[CampaignSendSchedule]:
        stmt = (select(CampaignSendSchedule)
                .where(CampaignSendSchedule.tenant_id == self.tenant_id,
                       CampaignSendSchedule.campaign_id == campaign_id)
                .order_by(CampaignSendSchedule.send_date, CampaignSendSchedule.batch_number))
        return list((await self.session.execute(stmt)).scalars().all())

    async def cancel_schedule(self, campaign_id: uuid.UUID, *, at: datetime) -> None:
        sch = CampaignSendSchedule
        await self.session.execute(
            update(sch).where(sch.tenant_id == self.tenant_id, sch.campaign_id == campaign_id,
                              sch.status.in_(("pending", "processing")))
            .values(status="cancelled", messages_remaining=0, updated_at=at)
            .execution_options(synchronize_session=False))


class EventRepo(TenantRepository[CampaignEvent]):
    model = CampaignEvent
    label = "event"

    async def list_page(self, campaign_id: uuid.UUID, *, type_: str | None, limit: int,
                        cursor: str | None) -> PageRows[CampaignEvent]:
        """Newest first, keyset on the id (index campaign_id, type, id)."""
        stmt = self.scoped().where(CampaignEvent.campaign_id == campaign_id)
        if type_:
            stmt = stmt.where(CampaignEvent.type == type_)
        return await keyset_page(self.session, stmt, CampaignEvent.id, limit=limit, cursor=cursor,
                                 descending=True, key_type=int)
