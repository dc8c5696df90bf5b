from __future__ import annotations

import uuid
from typing import Any

from sqlalchemy import exists, func, or_, select

from clarion.kit.pagination import PageRows, keyset_page
from clarion.kit.repository import TenantRepository
from clarion.kit.sqljson import json_array_contains, like_escape
from clarion.models import Contact, ContactSubscription


def subscription_is(channel: str, status: str) -> Any:
    """Condition on Contact: its subscription on `channel` has `status` (correlated EXISTS, index-backed)."""
    return exists().where(
        ContactSubscription.contact_id == Contact.id,
        ContactSubscription.channel == channel,
        ContactSubscription.status == status,
    )


class ContactRepo(TenantRepository[Contact]):
    model = Contact
    label = "contact"

    async def find_by_email(self, email: str) -> Contact | None:
        result = await self.session.execute(self.scoped().where(Contact.email == email))
        return result.scalar_one_or_none()

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
        columns = (Contact.id, Contact.email, Contact.phone, Contact.first_name, Contact.last_name,
                   Contact.locale, Contact.timezone, Contact.tags, Contact.attributes)
        rows: list[dict[str, Any]] = []
        for start in range(0, len(ids), 1000):  # stays under SQLite's bound-parameter limit
            chunk = ids[start:start + 1000]
            result = await self.session.execute(self.scoped(select(*columns)).where(Contact.id.in_(chunk)))
            rows.extend(dict(row._mapping) for row in result)
        return rows

    async def ids_by(self, column: Any, values: list[str]) -> dict[str, uuid.UUID]:
        """Map each given email (or phone) to its contact id; unknown values are simply absent."""
        found: dict[str, uuid.UUID] = {}
        for start in range(0, len(values), 1000):  # stays under SQLite's bound-parameter limit
            chunk = values[start:start + 1000]
            rows = await self.session.execute(self.scoped(select(column, Contact.id)).where(column.in_(chunk)))
            found.update({value: id_ for value, id_ in rows.all()})
        return found
