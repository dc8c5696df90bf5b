"""The set-based SQL of a contact import: per chunk one lookup, then bulk inserts and updates.

Dialect differences of the import live here: PostgreSQL gets a JSON-array parameter for the lookup and COPY in its
binary format for the inserts; SQLite a JSON-array parameter and validated rows bound as they are into a stage, moved into
contacts by one INSERT … SELECT. Every statement is scoped to the repository's tenant.
New contacts get no subscription rows: their default consent is two columns of the contact (see audience.consent).
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from itertools import chain, groupby, islice
from typing import Any

from sqlalchemy import String, bindparam, text, update
from sqlalchemy.exc import IntegrityError, OperationalError
from sqlalchemy.ext.asyncio import AsyncConnection

from clarion.audience.consent import default_bits_of
from clarion.audience.import_validation import (
    EMAIL,
    PHONE,
    ImportRow,
)
from clarion.kit.ids import new_id_hexes, reserve_stamps
from clarion.kit.repository import TenantRepository, in_chunks
from clarion.models import Contact

_CONTACT_COLUMNS = ("id", "tenant_id", "email", "phone", "first_name", "last_name", "locale", "timezone",
                    "attributes", "tags", "created_at", "updated_at", "default_subscribed_channels", "created_via")
# executemany batches: big enough to amortise round trips, small enough to bound driver memory.
_BATCH = 2000
# Rows per write of a COPY: the server starts on the first piece while the rest is built.
_COPY_PIECE = 500
# The lookup's plan is safe once the planner expects at least _FEW contacts in the tenant. Below that, statistics
# are refreshed when the tenant holds ten times the estimate, and at least _STALE_FROM contacts (fewer cost little
# whichever the plan).
_FEW = 1000
_STALE_FROM = 1000


@dataclass(slots=True)
class ContactFields:
    id: uuid.UUID | None  # None for a contact not yet written: the repository assigns ids as it inserts
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

    `default_channels`: a new contact's default-subscription bits, those of the row that created it.
    `tags_json`/`attributes_json` hold the JSON texts of `tags`/`attributes` while they are known; a change clears
    them and the repository serialises the new values.
    """

    is_new: bool
    default_channels: int = 0
    changed: bool = False
    email_changed: bool = False
    phone_changed: bool = False
    tags_json: str | None = None
    attributes_json: str | None = None

    def row(self) -> NewRow:
        """This contact as a validated row (ImportRow's fields, no line): what the inserts write."""
        return (None, self.email, self.phone, self.first_name, self.last_name, self.locale, self.timezone,
                self.tags_json if self.tags_json is not None else json.dumps(self.tags),
                self.attributes_json if self.attributes_json is not None else json.dumps(self.attributes))


# A new contact exactly as its validated CSV row has it (import_validation.ImportRow's fields as a tuple): most new
# contacts are written straight from their row, with no PlannedContact built for them.
NewRow = tuple[Any, ...]


class ContactImportRepo(TenantRepository[Contact]):
    model = Contact
    label = "contact"

    async def _connection(self) -> AsyncConnection:
        return await self.session.connection()

    async def written_by_another_process(self) -> bool:
        """True when the database does the writing in its own process (PostgreSQL), so this one can prepare the
        next chunk during all of it; False for SQLite, which writes in this process (see write's handed_over)."""
        return (await self._connection()).dialect.name == "postgresql"

    async def find_owners(self, emails: list[str], phones: list[str]) -> list[ExistingContact]:
        """The tenant's contacts that own any of these emails or phones: one query per chunk.

        Each address is probed in the (tenant_id, email) / (tenant_id, phone) unique index, so the cost follows the
        chunk, not the tenant's size. Both databases would otherwise, without fresh statistics (during a big
        import there never are), scan the tenant's whole part of an index for every chunk and hash it: quadratic
        over the import (measured on PostgreSQL at 300,000 contacts: 180–560 ms per chunk instead of 9 ms). So the
        addresses drive the loop: on SQLite a CROSS JOIN fixes the loop order; on PostgreSQL each probe is a
        LATERAL subquery, which LIMIT 1 (an address has one owner) keeps from being flattened into a plain join.
        """
        if not emails and not phones:
            return []
        dialect = (await self._connection()).dialect.name
        if dialect == "postgresql":
            await self._refresh_statistics_if_tenant_looks_empty()
        columns = (Contact.id, Contact.email, Contact.phone, Contact.first_name, Contact.last_name,
                   Contact.locale, Contact.timezone, Contact.attributes, Contact.tags)
        names = ", ".join(f"c.{c.key}" for c in columns)
        # The list travels as one JSON text: json.dumps is several times cheaper than adapting a Python list into a
        # PostgreSQL array item by item.
        if dialect == "postgresql":
            probe = (f"SELECT {names} FROM json_array_elements_text(CAST(:{{address}}s AS json)) AS j(value) "
                     f"CROSS JOIN LATERAL (SELECT {names} FROM contacts AS c WHERE c.tenant_id = :tenant_id "
                     "AND c.{address} = j.value LIMIT 1) AS c")
        else:
            probe = (f"SELECT {names} FROM json_each(:{{address}}s) AS j CROSS JOIN contacts AS c "
                     "WHERE c.tenant_id = :tenant_id AND c.{address} = j.value")
        parts = [probe.format(address=address) for address, values in (("email", emails), ("phone", phones))
                 if values]
        params = [bindparam("tenant_id", self.tenant_id, type_=Contact.__table__.c.tenant_id.type)]
        params += [bindparam(f"{address}s", json.dumps(values), type_=String)
                   for address, values in (("email", emails), ("phone", phones)) if values]
        stmt = text(" UNION ALL ".join(parts)).bindparams(*params).columns(*columns)
        rows = await self.session.execute(stmt)
        # A contact owning one of the emails and one of the phones comes back twice: once is enough.
        unique = {row[0]: row for row in rows.all()}
        return [ExistingContact(*row) for row in unique.values()]

    async def _refresh_statistics_if_tenant_looks_empty(self) -> None:
        """(PostgreSQL) ANALYZE contacts when the planner believes this tenant holds next to no contacts but it
        holds many: statistics taken before a big import. Believing that, the planner rates an index that only
        narrows to the tenant (UNIQUE(tenant_id, phone) for an email) as good as the exact one, and each probe of
        the lookup then reads the tenant's whole part of that index. Costs one plan and, below _FEW estimated
        rows, a count of at most 10,000 rows; ANALYZE reads a fixed-size sample (and counts this transaction's own
        rows). It waits for no lock: if another ANALYZE of contacts holds it, the lookup goes on with its plan."""
        stmt = text("EXPLAIN (FORMAT JSON) SELECT 1 FROM contacts WHERE tenant_id = :tenant_id").bindparams(
            bindparam("tenant_id", self.tenant_id, type_=Contact.__table__.c.tenant_id.type))
        plan = (await self.session.execute(stmt)).scalar_one()
        estimate = (json.loads(plan) if isinstance(plan, str) else plan)[0]["Plan"]["Plan Rows"]
        if estimate >= _FEW:
            return
        stale_from = max(10 * int(estimate), _STALE_FROM)
        present = (await self.session.execute(text(
            f"SELECT count(*) FROM (SELECT 1 FROM contacts WHERE tenant_id = :tenant_id LIMIT {stale_from}) AS s"
        ).bindparams(bindparam("tenant_id", self.tenant_id, type_=Contact.__table__.c.tenant_id.type)))).scalar_one()
        if present < stale_from:
            return
        try:
            async with self.session.begin_nested():
                await self.session.execute(text("SET LOCAL lock_timeout = '100ms'"))
                await self.session.execute(text("ANALYZE contacts"))
                await self.session.execute(text("SET LOCAL lock_timeout TO DEFAULT"))
        except OperationalError:
            pass  # lock not available within 100 ms: someone else is analysing contacts right now

    async def write(self, inserts: Sequence[NewRow | PlannedContact], updates: Sequence[PlannedContact], *,
                    now: datetime, source: str, handed_over: Callable[[], None] | None = None) -> None:
        """Apply a chunk's plan: updates first (they may free an email or phone a new contact takes), then inserts,
        in order, with ids that rise in that order.

        `handed_over`, if given, is called once the rest of the write is SQLite's own work on rows it already
        holds (one statement, run without Python's GIL): the caller may then prepare its next chunk meanwhile."""
        if updates:
            await self._update(updates, now)
        if inserts:
            conn = await self._connection()
            try:
                if conn.dialect.name == "postgresql":
                    await self._copy_inserts(conn, inserts, now, source)
                else:
                    await self._staged_inserts(conn, inserts, now, source, handed_over)
            except conn.dialect.loaded_dbapi.IntegrityError as exc:
                # The inserts go to the driver directly, past SQLAlchemy, which would have wrapped this error.
                raise IntegrityError("INSERT INTO contacts", None, exc) from exc

    async def insert_if_all_new(self, inserts: Sequence[NewRow | PlannedContact], *, now: datetime,
                                source: str, handed_over: Callable[[], None] | None = None) -> bool:
        """Insert contacts planned without a lookup, provided none of their emails and phones exists yet: the
        unique indexes check that as the rows go in, which saves a chunk's lookup. True when written; False (and
        nothing written: the rows go in a savepoint that is rolled back) when some address already exists.
        `handed_over`: as for write()."""
        if not inserts:
            return True
        try:
            async with self.session.begin_nested():
                await self.write(inserts, (), now=now, source=source, handed_over=handed_over)
        except IntegrityError:
            return False
        return True

    async def _update(self, contacts: Sequence[PlannedContact], now: datetime) -> None:
        table = Contact.__table__
        scoped = (table.c.tenant_id == self.tenant_id, table.c.id == bindparam("b_id"))
        # Addresses can move between contacts within one chunk (a → b, c → a). Clearing the moved ones first keeps
        # every single-row UPDATE clear of the unique constraints, whatever order the rows are applied in.
        for column, flag in (("email", "email_changed"), ("phone", "phone_changed")):
            moved = [{"b_id": c.id} for c in contacts if getattr(c, flag)]
            for chunk in in_chunks(moved, _BATCH):
                await self.session.execute(update(table).where(*scoped).values({column: None}), chunk)
        stmt = update(table).where(*scoped).values(
            email=bindparam("b_email"), phone=bindparam("b_phone"), first_name=bindparam("b_first_name"),
            last_name=bindparam("b_last_name"), locale=bindparam("b_locale"), timezone=bindparam("b_timezone"),
            attributes=bindparam("b_attributes", type_=table.c.attributes.type),
            tags=bindparam("b_tags", type_=table.c.tags.type),
            updated_at=bindparam("b_updated_at", type_=table.c.updated_at.type),
        )
        params = [{"b_id": c.id, "b_email": c.email, "b_phone": c.phone, "b_first_name": c.first_name,
                   "b_last_name": c.last_name, "b_locale": c.locale, "b_timezone": c.timezone,
                   "b_attributes": c.attributes, "b_tags": c.tags, "b_updated_at": now} for c in contacts]
        for chunk in in_chunks(params, _BATCH):
            await self.session.execute(stmt, chunk)

    async def _staged_inserts(self, conn: AsyncConnection, contacts: Sequence[NewRow | PlannedContact],
                              now: datetime, source: str, handed_over: Callable[[], None] | None) -> None:
        """(SQLite) The rows go into a bare temporary table first, then into contacts with one INSERT … SELECT.

        Binding values row by row needs the GIL; maintaining contacts' b-trees (the table, its primary key and two
        unique indexes: most of the work) does not, and in one statement it is one sqlite3_step with the GIL
        released throughout. So the importer's next chunk is read and validated while SQLite inserts this one.
        (An executemany straight into contacts would take the GIL back for every row, and while the importer
        runs Python the driver's thread waits up to the interpreter's switch interval, 5 ms, each time.)

        A validated row is bound exactly as it is (its values are those the driver takes); what every row of the
        chunk shares (tenant, timestamps, source), the default channels that follow from its addresses, and its id
        are filled in by the INSERT … SELECT, also without the GIL. A PlannedContact (a new contact that a later
        row of the chunk changed) goes in with its own default channels: those of the row that created it."""
        raw = (await conn.get_raw_connection()).driver_connection
        await raw.execute(_CREATE_STAGE_SQLITE)
        await raw.execute(_EMPTY_STAGE_SQLITE)
        for kind, run in groupby(contacts, type):
            if kind is tuple:
                await _stage_rows(raw, list(run))
            else:
                await raw.executemany(_INSERT_PLANNED_STAGE_SQLITE, [(*c.row(), c.default_channels) for c in run])
        # The values SQLAlchemy's type processors would produce: UTCDateTime's naive UTC ISO text, Uuid's 32 hex digits.
        to_text = Contact.__table__.c.created_at.type._cached_bind_processor(conn.dialect)  # type: ignore[union-attr]
        params = {"first_stamp": reserve_stamps(len(contacts)), "tenant_id": self.tenant_id.hex, "now": to_text(now),
                  "source": source}
        if handed_over is not None:
            handed_over()
        await raw.execute(_INSERT_CONTACTS_FROM_STAGE_SQLITE, params)

    async def _copy_inserts(self, conn: AsyncConnection, contacts: Sequence[NewRow | PlannedContact],
                            now: datetime, source: str) -> None:
        # COPY streams rows in the session's own transaction: several times faster than multi-row INSERTs. The
        # chunk goes over in COPY's binary format, built here (copy_binary): psycopg's write_row (a coroutine and
        # a dumper per value) cost ~3.8 µs a row. It goes in pieces, so the server inserts one while the next is
        # built.
        raw = (await conn.get_raw_connection()).driver_connection
        shared = CopyShared(self.tenant_id, now, source)
        async with raw.cursor() as cursor, cursor.copy(_COPY_CONTACTS_PG) as copy:
            await copy.write(COPY_SIGNATURE)
            for piece in in_chunks(contacts, _COPY_PIECE):
                await copy.write(copy_binary(piece, shared))
            await copy.write(COPY_TRAILER)


# COPY's binary format, as PostgreSQL documents it: a signature, a flags word and a header-extension length; per row
# its field count, then each field as a 32-bit length (-1: NULL) and the value in its type's binary form; -1 at the
# end. The server then parses no ids, times or integers: 14.5 → 11.7 µs/row of its CPU (100,000 contacts, against
# the text format). Rows are built as text whose characters are the bytes (latin-1), so one row is one f-string:
# text values that are not ASCII go in as their UTF-8 bytes.
COPY_SIGNATURE = b"PGCOPY\n\xff\r\n\x00" + bytes(8)
COPY_TRAILER = b"\xff\xff"
_PG_EPOCH = datetime(2000, 1, 1, tzinfo=UTC)
_NULL_FIELD = "\xff\xff\xff\xff"
_FIELD_COUNT = len(_CONTACT_COLUMNS).to_bytes(2, "big").decode("latin-1")
_SHORT_LENGTHS = tuple(length.to_bytes(4, "big").decode("latin-1") for length in range(1024))


def _length(length: int) -> str:
    return _SHORT_LENGTHS[length] if length < 1024 else length.to_bytes(4, "big").decode("latin-1")


def _text_field(value: str | None) -> str:
    if value is None:
        return _NULL_FIELD
    if not value.isascii():
        value = value.encode().decode("latin-1")
    return _length(len(value)) + value


def _fixed_field(data: bytes) -> str:
    return _length(len(data)) + data.decode("latin-1")


class CopyShared:
    """The fields every row of a chunk shares, encoded once."""

    def __init__(self, tenant_id: uuid.UUID, now: datetime, source: str) -> None:
        self.tenant = _fixed_field(tenant_id.bytes)
        # timestamptz: microseconds since 2000-01-01 UTC, a signed 64-bit integer
        self.now = _fixed_field(((now - _PG_EPOCH) // timedelta(microseconds=1)).to_bytes(8, "big", signed=True))
        self.source = _text_field(source)
        self.channels = {bits: _fixed_field(bits.to_bytes(4, "big", signed=True)) for bits in range(256)}


def copy_binary(contacts: Sequence[NewRow | PlannedContact], shared: CopyShared) -> bytes:
    """Contact rows (in _CONTACT_COLUMNS order) in COPY's binary format, without the signature and trailer. JSONB's
    binary form is a version byte (1) and the JSON text."""
    rows = []
    text, bits_of, channels = _text_field, default_bits_of, shared.channels
    head, tenant, now, source = _FIELD_COUNT + _length(16), shared.tenant, shared.now, shared.source
    for id_hex, c in zip(new_id_hexes(len(contacts)), contacts, strict=True):
        if type(c) is tuple:
            row, bits = c, bits_of(c[EMAIL], c[PHONE])
        else:
            planned: PlannedContact = c  # type: ignore[assignment]
            row, bits = planned.row(), planned.default_channels
        _, email, phone, first_name, last_name, locale, timezone, tags, attributes = row
        rows.append(f"{head}{bytes.fromhex(id_hex).decode('latin-1')}{tenant}{text(email)}{text(phone)}"
                    f"{text(first_name)}{text(last_name)}{text(locale)}{text(timezone)}{text(chr(1) + attributes)}"
                    f"{text(chr(1) + tags)}{now}{now}{channels[bits]}{source}")
    return "".join(rows).encode("latin-1")


async def _stage_rows(raw: Any, rows: list[NewRow]) -> None:
    """(SQLite) Validated rows into the stage, _STAGE_ROWS_PER_INSERT rows to a statement: the driver's cost per
    row of an executemany (fetch the parameters, step, reset) is paid once per statement instead (measured: a
    third less time binding)."""
    whole = len(rows) - len(rows) % _STAGE_ROWS_PER_INSERT
    if whole:
        values = list(chain.from_iterable(islice(rows, whole)))
        width = len(ImportRow._fields) * _STAGE_ROWS_PER_INSERT
        await raw.executemany(_INSERT_MANY_ROWS_STAGE_SQLITE, [values[start:start + width]
                                                                for start in range(0, len(values), width)])
    if whole < len(rows):
        await raw.executemany(_INSERT_ROWS_STAGE_SQLITE, rows[whole:])


# The stage lives in the connection's temporary database: private to it, and gone with it. It is emptied before
# each use: a chunk whose insert failed (the savepoint rolled back) or an import that ended early leave nothing
# that the next use would insert. Its columns are ImportRow's, then a PlannedContact's default channels (NULL for
# a row: they follow from its addresses). Its rowid keeps file order, so ids rise in that order.
_STAGE = "temp.contact_import_rows"
_STAGE_COLUMNS = (*ImportRow._fields, "default_channels")
_CREATE_STAGE_SQLITE = f"CREATE TABLE IF NOT EXISTS {_STAGE} ({', '.join(_STAGE_COLUMNS)})"
_EMPTY_STAGE_SQLITE = f"DELETE FROM {_STAGE}"


def _insert_into_stage(columns: Sequence[str], rows: int = 1) -> str:
    values = f"({', '.join('?' * len(columns))})"
    return f"INSERT INTO {_STAGE} ({', '.join(columns)}) VALUES {', '.join([values] * rows)}"


_STAGE_ROWS_PER_INSERT = 200  # 1,800 parameters: well below SQLite's limit of 32,766
_INSERT_ROWS_STAGE_SQLITE = _insert_into_stage(ImportRow._fields)
_INSERT_MANY_ROWS_STAGE_SQLITE = _insert_into_stage(ImportRow._fields, _STAGE_ROWS_PER_INSERT)
_INSERT_PLANNED_STAGE_SQLITE = _insert_into_stage(_STAGE_COLUMNS)
# kit.ids' layout (see reserve_stamps), one stamp per stage row in rowid order, as two 64-bit halves: the
# millisecond, the version (7) and the counter; the variant (0b10, the sign bit and the next) and 62 random bits.
_STAMP = f"(:first_stamp + rowid - (SELECT min(rowid) FROM {_STAGE}))"
_NEW_ID_SQLITE = (f"printf('%016x%016x', (({_STAMP} >> 12) << 16) | 28672 | ({_STAMP} & 4095), "
                  "(random() & 4611686018427387903) | -9223372036854775808)")
_DEFAULT_CHANNELS_SQLITE = (
    "coalesce(default_channels, CASE WHEN email IS NULL THEN "
    f"(CASE WHEN phone IS NULL THEN {default_bits_of(None, None)} ELSE {default_bits_of(None, '')} END) ELSE "
    f"(CASE WHEN phone IS NULL THEN {default_bits_of('', None)} ELSE {default_bits_of('', '')} END) END)")
_INSERT_CONTACTS_FROM_STAGE_SQLITE = (
    f"INSERT INTO contacts ({', '.join(_CONTACT_COLUMNS)}) "
    f"SELECT {_NEW_ID_SQLITE}, :tenant_id, email, phone, first_name, last_name, locale, timezone, attributes_json, "
    f"tags_json, :now, :now, {_DEFAULT_CHANNELS_SQLITE}, :source FROM {_STAGE} ORDER BY rowid")
_COPY_CONTACTS_PG = f"COPY contacts ({', '.join(_CONTACT_COLUMNS)}) FROM STDIN (FORMAT binary)"
