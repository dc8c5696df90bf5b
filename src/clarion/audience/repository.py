from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import and_, exists, func, literal, not_, or_, select, update

from clarion.kit.pagination import PageRows, keyset_page
from clarion.kit.repository import TenantRepository, dialect_insert, in_chunks
from clarion.kit.sqljson import json_array_contains, like_escape
from clarion.models import Contact, ContactSubscription
from clarion.models.audience import CHANNEL_BITS


def _row_on(channel: str, *conditions: Any) -> Any:
    """EXISTS a consent row of the contact on `channel` (matching `conditions`): a probe of its primary key."""
    return exists().where(ContactSubscription.contact_id == Contact.id, ContactSubscription.channel == channel,
                          *conditions)


def _default_on(channel: str) -> Any:
    return Contact.default_subscribed_channels.op("&")(CHANNEL_BITS[channel]) != 0


def consent_matches(channel: str, status_condition: Any, *, subscribed_matches: bool) -> Any:
    """Condition on Contact: its consent on `channel` (see audience.consent) satisfies `status_condition`, a
    condition on ContactSubscription.status; `subscribed_matches` says whether "subscribed" satisfies it, which
    decides for a default channel without a row. True or false, never NULL (the filter tree negates it).

    One index probe per contact either way: on a default channel the consent matches unless a row says
    otherwise; elsewhere only a matching row makes it match.
    """
    matching_row = _row_on(channel, status_condition)
    if not subscribed_matches:
        return matching_row
    return or_(and_(_default_on(channel), not_(_row_on(channel, not_(status_condition)))),
               and_(not_(_default_on(channel)), matching_row))


def has_consent(channel: str) -> Any:
    """Condition on Contact: it has any consent status on `channel` (a row, or a default channel)."""
    return or_(_default_on(channel), _row_on(channel))


def subscription_is(channel: str, status: str) -> Any:
    """Condition on Contact: its consent on `channel` is `status`."""
    return consent_matches(channel, ContactSubscription.status == status, subscribed_matches=status == "subscribed")


class ContactRepo(TenantRepository[Contact]):
    model = Contact
    label = "contact"

    async def find_by_email(self, email: str) -> Contact | None:
        result = await self.session.execute(self.scoped().where(Contact.email == email))
        return result.scalar_one_or_none()

    async def release_telegram_chat(self, chat_id: str, *, keep: uuid.UUID) -> None:
        """Unlink `chat_id` from any other contact of this tenant (a chat belongs to one contact: the latest
        to link it). Runs at once, before the new link is flushed, so the unique index never sees both."""
        await self.session.execute(
            update(Contact).where(Contact.tenant_id == self.tenant_id, Contact.telegram_chat_id == chat_id,
                                  Contact.id != keep)
            .values(telegram_chat_id=None).execution_options(synchronize_session="fetch"))

    async def find_by_phone(self, phone: str) -> Contact | None:
        result = await self.session.execute(self.scoped().where(Contact.phone == phone))
        return result.scalar_one_or_none()

    async def list_page(
        self, *, tag: str | None, q: str | None, subscriptions: dict[str, str], limit: int, cursor: str | None
    ) -> PageRows[Contact]:
        stmt = self.scoped()
        if tag:
            stmt = stmt.where(json_array_contains(Contact.tags, tag))
        if q:
            pattern = f"%{like_escape(q.lower())}%"
            stmt = stmt.where(or_(*(func.lower(col).like(pattern, escape="\\") for col in
                                    (Contact.first_name, Contact.last_name, Contact.email, Contact.phone))))
        for channel, status in subscriptions.items():
            stmt = stmt.where(subscription_is(channel, status))
        return await keyset_page(self.session, stmt, Contact.id, limit=limit, cursor=cursor, key_type=uuid.UUID)

    async def render_fields(self, ids: list[uuid.UUID]) -> list[dict[str, Any]]:
        """The fields templates see, for the given contacts of this tenant: plain rows, no ORM objects (and so
        no subscription loading) because the send pipeline asks for hundreds at a time."""
        columns = (Contact.id, Contact.email, Contact.phone, Contact.telegram_chat_id, Contact.first_name,
                   Contact.last_name, Contact.locale, Contact.timezone, Contact.tags, Contact.attributes)
        rows: list[dict[str, Any]] = []
        for chunk in in_chunks(ids):
            result = await self.session.execute(self.scoped(select(*columns)).where(Contact.id.in_(chunk)))
            rows.extend(dict(row._mapping) for row in result)
        return rows

    async def unsubscribe(self, ids: list[uuid.UUID], channel: str, *, source: str, at: datetime,
                          replacing: list[str]) -> list[uuid.UUID]:
        """Write an `unsubscribed` consent row on `channel` for the given contacts of this tenant (one upsert per
        1,000 ids; a row decides over any default) where they have no row yet or its status is one of `replacing`.
        Returns the ids whose consent changed."""
        table = ContactSubscription.__table__
        changed: list[uuid.UUID] = []
        for chunk in in_chunks(ids):
            chosen = self.scoped(select(Contact.tenant_id, Contact.id, literal(channel), literal("unsubscribed"),
                                        literal(at, type_=table.c.changed_at.type), literal(source)))
            chosen = chosen.where(Contact.id.in_(chunk))
            stmt = dialect_insert(self.session, table).from_select(
                ["tenant_id", "contact_id", "channel", "status", "changed_at", "source"], chosen)
            stmt = stmt.on_conflict_do_update(
                index_elements=["contact_id", "channel"],
                set_={"status": stmt.excluded.status, "changed_at": stmt.excluded.changed_at,
                      "source": stmt.excluded.source},
                where=table.c.status.in_(replacing),
            ).returning(table.c.contact_id)
            changed += (await self.session.execute(stmt)).scalars().all()
        return changed

    async def ids_by(self, column: Any, values: list[str]) -> dict[str, uuid.UUID]:
        """Map each given email (or phone) to its contact id; unknown values are simply absent."""
        found: dict[str, uuid.UUID] = {}
        for chunk in in_chunks(values):
            rows = await self.session.execute(self.scoped(select(column, Contact.id)).where(column.in_(chunk)))
            found.update({value: id_ for value, id_ in rows.all()})
        return found
