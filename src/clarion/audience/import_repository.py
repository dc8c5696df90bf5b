"""The set-based SQL of a contact import: per chunk one lookup, then bulk inserts and updates.

Dialect differences of the import live here: PostgreSQL gets array parameters and COPY, SQLite a JSON-array
parameter and executemany. Every statement is scoped to the repository's tenant.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

from sqlalchemy import String, any_, bindparam, func, insert, literal_column, or_, select, update
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.ext.asyncio import AsyncConnection

from clarion.kit.repository import TenantRepository
from clarion.models import Contact, ContactSubscription

_CONTACT_COLUMNS = ("id", "tenant_id", "email", "phone", "first_name", "last_name", "locale", "timezone",
                    "attributes", "tags", "created_at", "updated_at")
_SUBSCRIPTION_COLUMNS = ("tenant_id", "contact_id", "channel", "status", "changed_at", "source")
# executemany batches: big enough to amortise round trips, small enough to bound driver memory.
_BATCH = 2000


@dataclass(slots=True, frozen=True)
class ExistingContact:
    id: uuid.UUID
    email: str | None
    phone: str | None
    first_name: str | None
    last_name: str | None
    locale: str | None
    timezone: str | None
    attributes: dict[str, Any]
    tags: list[str]


class ContactValues(Protocol):
    """What the repository needs of a planned contact (importer.PlannedContact)."""

    id: uuid.UUID
    email: str | None
    phone: str | None
    first_name: str | None
    last_name: str | None
    locale: str | None
    timezone: str | None
    attributes: dict[str, Any]
    tags: list[str]
    channels: tuple[str, ...]
    email_changed: bool
    phone_changed: bool


class ContactImportRepo(TenantRepository[Contact]):
    model = Contact
    label = "contact"

    async def _connection(self) -> AsyncConnection:
        return await self.session.connection()

    def _one_of(self, column: Any, values: list[str], dialect: str) -> Any:
        """`column IN values` with a single bound parameter, whatever the number of values."""
        if dialect == "postgresql":
            return column == any_(bindparam(None, values, type_=ARRAY(String)))
        each = func.json_each(bindparam(None, json.dumps(values), type_=String)).table_valued("value")
        return column.in_(select(literal_column("value")).select_from(each))

    async def find_owners(self, emails: list[str], phones: list[str]) -> list[ExistingContact]:
        """The tenant's contacts that own any of these emails or phones: one query per chunk."""
        if not emails and not phones:
            return []
        dialect = (await self._connection()).dialect.name
        conditions = []
        if emails:
            conditions.append(self._one_of(Contact.email, emails, dialect))
        if phones:
            conditions.append(self._one_of(Contact.phone, phones, dialect))
        stmt = self.scoped(select(Contact.id, Contact.email, Contact.phone, Contact.first_name, Contact.last_name,
                                  Contact.locale, Contact.timezone, Contact.attributes, Contact.tags)
                           ).where(or_(*conditions))
        rows = await self.session.execute(stmt)
        return [ExistingContact(*row) for row in rows.all()]

    async def write(self, inserts: Sequence[ContactValues], updates: Sequence[ContactValues], *,
                    now: datetime, source: str) -> None:
        """Apply a chunk's plan: updates first (they may free an email or phone a new contact takes), then inserts."""
        if updates:
            await self._update(updates, now)
        if inserts:
            conn = await self._connection()
            if conn.dialect.name == "postgresql":
                await self._copy_inserts(conn, inserts, now, source)
            else:
                await self._executemany_inserts(inserts, now, source)

    async def _update(self, contacts: Sequence[ContactValues], now: datetime) -> None:
        table = Contact.__table__
        scoped = (table.c.tenant_id == self.tenant_id, table.c.id == bindparam("b_id"))
        # Addresses can move between contacts within one chunk (a → b, c → a). Clearing the moved ones first keeps
        # every single-row UPDATE clear of the unique constraints, whatever order the rows are applied in.
        for column, flag in (("email", "email_changed"), ("phone", "phone_changed")):
            moved = [{"b_id": c.id} for c in contacts if getattr(c, flag)]
            for start in range(0, len(moved), _BATCH):
                await self.session.execute(update(table).where(*scoped).values({column: None}),
                                           moved[start:start + _BATCH])
        stmt = update(table).where(*scoped).values(
            email=bindparam("b_email"), phone=bindparam("b_phone"), first_name=bindparam("b_first_name"),
            last_name=bindparam("b_last_name"), locale=bindparam("b_locale"), timezone=bindparam("b_timezone"),
            attributes=bindparam("b_attributes", type_=table.c.attributes.type),
            tags=bindparam("b_tags", type_=table.c.tags.type), updated_at=bindparam("b_updated_at", type_=table.c.updated_at.type),
        )
        params = [{"b_id": c.id, "b_email": c.email, "b_phone": c.phone, "b_first_name": c.first_name,
                   "b_last_name": c.last_name, "b_locale": c.locale, "b_timezone": c.timezone,
                   "b_attributes": c.attributes, "b_tags": c.tags, "b_updated_at": now} for c in contacts]
        for start in range(0, len(params), _BATCH):
            await self.session.execute(stmt, params[start:start + _BATCH])

    def _subscription_rows(self, contacts: Sequence[ContactValues], now: datetime,
                           source: str) -> list[tuple[Any, ...]]:
        return [(self.tenant_id, c.id, channel, "subscribed", now, source) for c in contacts for channel in c.channels]

    async def _executemany_inserts(self, contacts: Sequence[ContactValues], now: datetime, source: str) -> None:
        contact_rows = [dict(zip(_CONTACT_COLUMNS, (c.id, self.tenant_id, c.email, c.phone, c.first_name, c.last_name,
                                                    c.locale, c.timezone, c.attributes, c.tags, now, now)))
                        for c in contacts]
        subscription_rows = [dict(zip(_SUBSCRIPTION_COLUMNS, row))
                             for row in self._subscription_rows(contacts, now, source)]
        for table, rows in ((Contact.__table__, contact_rows), (ContactSubscription.__table__, subscription_rows)):
            for start in range(0, len(rows), _BATCH):
                await self.session.execute(insert(table), rows[start:start + _BATCH])

    async def _copy_inserts(self, conn: AsyncConnection, contacts: Sequence[ContactValues], now: datetime,
                            source: str) -> None:
        # COPY streams rows in the session's own transaction: several times faster than multi-row INSERTs.
        raw = (await conn.get_raw_connection()).driver_connection
        dumps = json.dumps
        async with raw.cursor() as cursor:
            async with cursor.copy(f"COPY contacts ({', '.join(_CONTACT_COLUMNS)}) FROM STDIN") as copy:
                for c in contacts:
                    await copy.write_row((c.id, self.tenant_id, c.email, c.phone, c.first_name, c.last_name, c.locale,
                                          c.timezone, dumps(c.attributes), dumps(c.tags), now, now))
            async with cursor.copy(
                    f"COPY contact_subscriptions ({', '.join(_SUBSCRIPTION_COLUMNS)}) FROM STDIN") as copy:
                for row in self._subscription_rows(contacts, now, source):
                    await copy.write_row(row)
