"""The set-based SQL of a contact import: per chunk one lookup, then bulk inserts and updates.

Dialect differences of the import live here: PostgreSQL gets array parameters and COPY, SQLite a JSON-array
parameter and the driver's executemany of pre-serialised values. Every statement is scoped to the repository's tenant.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import String, bindparam, text, update
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.ext.asyncio import AsyncConnection

from clarion.kit.repository import TenantRepository
from clarion.models import Contact

_CONTACT_COLUMNS = ("id", "tenant_id", "email", "phone", "first_name", "last_name", "locale", "timezone",
                    "attributes", "tags", "created_at", "updated_at")
# The order of the SELECT lists in the subscription statements below.
_SUBSCRIPTION_COLUMNS = ("tenant_id", "channel", "status", "changed_at", "source", "contact_id")
# executemany batches: big enough to amortise round trips, small enough to bound driver memory.
_BATCH = 2000


@dataclass(slots=True)
class ContactFields:
    id: uuid.UUID
    email: str | None
    phone: str | None
    first_name: str | None
    last_name: str | None
    locale: str | None
    timezone: str | None
    attributes: dict[str, Any]
    tags: list[str]


@dataclass(slots=True)
class ExistingContact(ContactFields):
    """A contact already in the database that a chunk's emails or phones point at."""


@dataclass(slots=True)
class PlannedContact(ContactFields):
    """A contact as it will be after this chunk: a new one to insert or an existing one to update.

    `tags_json`/`attributes_json` hold the JSON texts of `tags`/`attributes` while they are known; a change
    clears them and the repository serialises the new values itself.
    """

    is_new: bool
    channels: tuple[str, ...] = ()
    changed: bool = False
    email_changed: bool = False
    phone_changed: bool = False
    tags_json: str | None = None
    attributes_json: str | None = None


class ContactImportRepo(TenantRepository[Contact]):
    model = Contact
    label = "contact"

    async def _connection(self) -> AsyncConnection:
        return await self.session.connection()

    async def find_owners(self, emails: list[str], phones: list[str]) -> list[ExistingContact]:
        """The tenant's contacts that own any of these emails or phones: one query per chunk.

        Each address is probed in the (tenant_id, email) / (tenant_id, phone) unique index, so the cost follows
        the chunk, not the tenant's size. SQLite, without statistics, would otherwise walk the whole tenant
        through ix_contacts_tenant_id for every chunk (quadratic over a big import): the array of addresses
        drives the join (CROSS JOIN also fixes SQLite's loop order) and the unique index is the one that fits.
        """
        if not emails and not phones:
            return []
        dialect = (await self._connection()).dialect.name
        columns = (Contact.id, Contact.email, Contact.phone, Contact.first_name, Contact.last_name,
                   Contact.locale, Contact.timezone, Contact.attributes, Contact.tags)
        names = ", ".join(f"c.{c.key}" for c in columns)
        # Both databases: the list of addresses drives a nested loop into the unique index. PostgreSQL, when its
        # statistics lag behind a growing import, would otherwise pick ix_contacts_tenant_id and scan the tenant.
        source = "unnest(:{address}s) AS j(value)" if dialect == "postgresql" else "json_each(:{address}s) AS j"
        parts = [f"SELECT {names} FROM {source.format(address=address)} CROSS JOIN contacts AS c "
                 f"WHERE c.tenant_id = :tenant_id AND c.{address} = j.value"
                 for address, values in (("email", emails), ("phone", phones)) if values]
        params = [bindparam("tenant_id", self.tenant_id, type_=Contact.__table__.c.tenant_id.type)]
        params += [bindparam(f"{address}s", values, type_=ARRAY(String)) if dialect == "postgresql"
                   else bindparam(f"{address}s", json.dumps(values), type_=String)
                   for address, values in (("email", emails), ("phone", phones)) if values]
        stmt = text(" UNION ALL ".join(parts)).bindparams(*params).columns(*columns)
        rows = await self.session.execute(stmt)
        # A contact owning one of the emails and one of the phones comes back twice: once is enough.
        unique = {row[0]: row for row in rows.all()}
        return [ExistingContact(*row) for row in unique.values()]

    async def write(self, inserts: Sequence[PlannedContact], updates: Sequence[PlannedContact], *,
                    now: datetime, source: str) -> None:
        """Apply a chunk's plan: updates first (they may free an email or phone a new contact takes), then inserts."""
        if updates:
            await self._update(updates, now)
        if inserts:
            conn = await self._connection()
            if conn.dialect.name == "postgresql":
                await self._copy_inserts(conn, inserts, now, source)
            else:
                await self._executemany_inserts(conn, inserts, now, source)

    async def _update(self, contacts: Sequence[PlannedContact], now: datetime) -> None:
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

    def _serialised_rows(self, contacts: Sequence[PlannedContact], tenant: Any, stamp: Any,
                         uuid_text: bool) -> list[tuple[Any, ...]]:
        """Contact rows as the driver takes them: JSON already text; ids as uuid objects or SQLite's hex text."""
        dumps = json.dumps
        return [((c.id.hex if uuid_text else c.id), tenant, c.email, c.phone, c.first_name, c.last_name, c.locale,
                 c.timezone,
                 c.attributes_json if c.attributes_json is not None else dumps(c.attributes),
                 c.tags_json if c.tags_json is not None else dumps(c.tags), stamp, stamp)
                for c in contacts]

    @staticmethod
    def _ids_by_channel(contacts: Sequence[PlannedContact]) -> dict[str, list[uuid.UUID]]:
        by_channel: dict[str, list[uuid.UUID]] = {}
        for c in contacts:
            for channel in c.channels:
                by_channel.setdefault(channel, []).append(c.id)
        return by_channel

    async def _executemany_inserts(self, conn: AsyncConnection, contacts: Sequence[PlannedContact], now: datetime,
                                   source: str) -> None:
        # SQLAlchemy would run a type processor per value (uuid, JSON, datetime): ~40% of the write. The values
        # go to the driver already in the form those processors produce (Uuid: 32 hex digits; JSON: json.dumps;
        # UTCDateTime: naive UTC ISO text), the one timestamp through the column's own processor.
        dialect = conn.dialect
        stamp = Contact.__table__.c.created_at.type._cached_bind_processor(dialect)(now)  # type: ignore[union-attr]
        tenant = self.tenant_id.hex
        raw = (await conn.get_raw_connection()).driver_connection
        rows = self._serialised_rows(contacts, tenant, stamp, uuid_text=True)
        await raw.executemany(_INSERT_CONTACTS_SQLITE, rows)
        for channel, ids in self._ids_by_channel(contacts).items():
            await raw.execute(_INSERT_SUBSCRIPTIONS_SQLITE,
                              (tenant, channel, "subscribed", stamp, source, json.dumps([i.hex for i in ids])))

    async def _copy_inserts(self, conn: AsyncConnection, contacts: Sequence[PlannedContact], now: datetime,
                            source: str) -> None:
        # COPY streams rows in the session's own transaction: several times faster than multi-row INSERTs.
        # Subscriptions never leave the server as rows: one INSERT … SELECT per channel over the new ids.
        raw = (await conn.get_raw_connection()).driver_connection
        async with raw.cursor() as cursor:
            async with cursor.copy(_COPY_CONTACTS_PG) as copy:
                write_row = copy.write_row
                for row in self._serialised_rows(contacts, self.tenant_id, now, uuid_text=False):
                    await write_row(row)
            for channel, ids in self._ids_by_channel(contacts).items():
                await cursor.execute(_INSERT_SUBSCRIPTIONS_PG, (self.tenant_id, channel, "subscribed", now, source, ids))


_INSERT_CONTACTS_SQLITE = (f"INSERT INTO contacts ({', '.join(_CONTACT_COLUMNS)}) "
                           f"VALUES ({', '.join('?' * len(_CONTACT_COLUMNS))})")
_INSERT_SUBSCRIPTIONS_SQLITE = (f"INSERT INTO contact_subscriptions ({', '.join(_SUBSCRIPTION_COLUMNS)}) "
                                "SELECT ?, ?, ?, ?, ?, value FROM json_each(?)")
_COPY_CONTACTS_PG = f"COPY contacts ({', '.join(_CONTACT_COLUMNS)}) FROM STDIN"
_INSERT_SUBSCRIPTIONS_PG = (f"INSERT INTO contact_subscriptions ({', '.join(_SUBSCRIPTION_COLUMNS)}) "
                            "SELECT %s, %s, %s, %s, %s, u.id FROM unnest(%s::uuid[]) AS u(id)")
