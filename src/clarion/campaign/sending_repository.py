"""The queries of the send side of campaigns after the claim: outcomes, events, counters, the campaign ticks,
links and money; and the dialect helpers the claims' queries (campaign.claims_repository) share.

UNSCOPED: workers, tracking endpoints and webhooks act across all tenants, naming rows by id; each row they
touch carries its tenant_id, which they pass on. Nothing here takes a tenant from a request.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from collections.abc import Callable, Collection, Hashable, Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any

from psycopg.types.json import Jsonb
from sqlalchemy import (
    BigInteger,
    ColumnElement,
    Select,
    String,
    Text,
    Uuid,
    and_,
    any_,
    bindparam,
    case,
    exists,
    func,
    literal,
    not_,
    or_,
    select,
    update,
)
from sqlalchemy.dialects import postgresql
from sqlalchemy.ext.asyncio import AsyncSession

from clarion.kit.repository import dialect, dialect_insert, in_chunks
from clarion.kit.types import UTCDateTime
from clarion.models import (
    Campaign,
    CampaignEvent,
    CampaignLink,
    CampaignRecipient,
    CampaignSendSchedule,
)

R = CampaignRecipient
NO_SYNC = {"synchronize_session": False}


def skip_locked(session: AsyncSession, stmt: Select[Any]) -> Select[Any]:
    """Lock the chosen recipient rows only (never the joined campaign); a no-op on SQLite."""
    if dialect(session) == "postgresql":
        return stmt.with_for_update(skip_locked=True, of=R)
    return stmt


def _locked(dialect_name: str, stmt: Select[Any]) -> Select[Any]:
    """Lock the chosen recipient rows until the transaction ends; on SQLite the write lock does that."""
    return stmt.with_for_update(of=R) if dialect_name == "postgresql" else stmt


def recipient_id_in(session: AsyncSession, ids: Sequence[int]) -> ColumnElement[bool]:
    """R.id IN ids. On PostgreSQL as `= ANY(one array)`: an IN list has one placeholder per id, so each batch
    size is different SQL and psycopg's prepared-statement cache never hits (measured in the send pipeline's
    profile: 2–6% of the sending process's time)."""
    return _recipient_id_in(dialect(session), "recipient_ids", list(ids))


def _recipient_id_in(dialect_name: str, name: str, ids: list[int] | None = None) -> ColumnElement[bool]:
    """recipient_id_in with the ids as parameter `name`: given now, or (None) at execution, for a statement
    built once."""
    if dialect_name == "postgresql":
        return R.id == any_(bindparam(name, ids, type_=postgresql.ARRAY(BigInteger()), required=ids is None))
    return R.id.in_(bindparam(name, ids, expanding=True, required=ids is None))


_BUILT: dict[tuple[str, Hashable], Any] = {}


def _built(session: AsyncSession, key: Hashable, build: Callable[[str], Any]) -> Any:
    """The statement `build(dialect name)` makes, built once per database kind and key. Building one (with its
    cache key) costs SQLAlchemy 0.2–0.4 ms; record_outcomes runs five for every chunk of 100 sends."""
    name = dialect(session)
    stmt = _BUILT.get((name, key))
    if stmt is None:
        stmt = _BUILT[(name, key)] = build(name)
    return stmt


@dataclass(frozen=True)
class HeldRow:
    """A recipient still `sending` under the caller's lease, as record_outcomes needs it."""

    id: int
    tenant_id: uuid.UUID
    campaign_id: uuid.UUID
    contact_id: uuid.UUID
    retry_count: int
    scheduled_send_date: date | None
    campaign_status: str  # of its campaign, read in the same statement
    max_attempts: int


# --- outcomes -----------------------------------------------------------------------------------------------

async def held_by(session: AsyncSession, ids: list[int], lease_owner: str) -> list[HeldRow]:
    """The given recipients still `sending` under `lease_owner` (with their campaign's status and max_attempts),
    locked until the transaction ends."""
    if not ids:
        return []

    def build(name: str) -> Any:
        stmt = (select(R.id, R.tenant_id, R.campaign_id, R.contact_id, R.retry_count, R.scheduled_send_date,
                       Campaign.status, Campaign.max_attempts)
                .join(Campaign, Campaign.id == R.campaign_id)
                .where(_recipient_id_in(name, "ids"), R.status == "sending",
                       R.lease_owner == bindparam("owner")))
        return _locked(name, stmt)

    stmt = _built(session, "held_by", build)
    return [HeldRow(*row) for row in (await session.execute(stmt, {"ids": ids, "owner": lease_owner})).all()]


async def _update_each(session: AsyncSession, rows: list[dict[str, Any]], columns: dict[str, Any],
                       assign: Callable[[Mapping[str, Any]], dict[str, Any]], *, key: Hashable,
                       params: Mapping[str, Any] | None = None) -> None:
    """UPDATE campaign_recipients row by row: each of `rows` has "rid" (the id) and the `columns` keys (name →
    column type), and `assign` maps those columns, as SQL expressions, to the values to set; it may also use
    bindparam()s named in `params`, the values every row shares. `key` names the statement `assign` makes (built
    once: the same key must always give the same SQL).

    On PostgreSQL that is one statement whatever the number of rows: UPDATE … FROM unnest(one array per column),
    since an executemany would run one UPDATE per row on the server. On SQLite, where a statement runs
    in-process, it is an executemany."""
    if not rows:
        return
    table = R.__table__
    shared = dict(params or {})

    def build(name: str) -> Any:
        if name == "postgresql":
            arrays = [bindparam("rid", type_=postgresql.ARRAY(BigInteger()))]
            arrays += [bindparam(column, type_=postgresql.ARRAY(type_)) for column, type_ in columns.items()]
            given = func.unnest(*arrays).table_valued("rid", *columns).render_derived(name="given")
            return update(table).where(table.c.id == given.c.rid).values(**assign(given.c))
        return update(table).where(table.c.id == bindparam("rid")).values(
            **assign({column: bindparam(column) for column in columns}))

    stmt = _built(session, ("update_each", key), build)
    if dialect(session) == "postgresql":
        arrays = {"rid": [row["rid"] for row in rows], **{column: [row[column] for row in rows]
                                                         for column in columns}}
        await session.execute(stmt, {**arrays, **shared}, execution_options=NO_SYNC)
        return
    await session.execute(stmt, [{**row, **shared} for row in rows] if shared else rows)


def _now() -> Any:
    return bindparam("now", type_=UTCDateTime())


async def mark_sent(session: AsyncSession, rows: list[dict[str, Any]], *, now: datetime) -> None:
    """rows: {"rid", "pmid", "ccid"} (ccid: the account it went through). Caller checked the lease (held_by) in
    this transaction."""
    await _update_each(session, rows, {"pmid": String(), "ccid": Uuid()}, lambda given: {
        "status": "sent", "sent_at": _now(), "provider_message_id": given["pmid"], "failure_reason": None,
        "lease_owner": None, "lease_expires_at": None, "updated_at": _now(), "channel_config_id": given["ccid"]},
        key="sent", params={"now": now})


async def mark_retry(session: AsyncSession, rows: list[dict[str, Any]], *, now: datetime,
                     unsend: bool = False) -> None:
    """rows: {"rid", "reason", "retry_at"}: back to pending, one more attempt counted. `unsend`: the rows were
    `sent` (a provider gave up on the message after accepting it), so sent_at is cleared too."""
    await _update_each(session, rows, {"reason": Text(), "retry_at": UTCDateTime()}, lambda given: {
        "status": "pending", "retry_count": R.__table__.c.retry_count + 1, "failure_reason": given["reason"],
        "send_after": given["retry_at"], "lease_owner": None, "lease_expires_at": None, "updated_at": _now(),
        **({"sent_at": None} if unsend else {})}, key=("retry", unsend), params={"now": now})


async def mark_finished(session: AsyncSession, rows: list[dict[str, Any]], *, status: str, now: datetime) -> None:
    """rows: {"rid", "reason"}: a final status without a send (failed, cancelled)."""
    await _update_each(session, rows, {"reason": Text()}, lambda given: {
        "status": status, "retry_count": R.__table__.c.retry_count + 1, "failure_reason": given["reason"],
        "failed_at": _now() if status == "failed" else None, "lease_owner": None, "lease_expires_at": None,
        "updated_at": _now()}, key=("finished", status), params={"now": now})


async def add_counters(session: AsyncSession, campaign_id: uuid.UUID, **deltas: int) -> None:
    """Atomic `counter = counter + delta` on one campaign, in SQL."""
    deltas = {name: delta for name, delta in deltas.items() if delta}
    if deltas:
        values = {name: getattr(Campaign, name) + delta for name, delta in deltas.items()}
        await session.execute(update(Campaign).where(Campaign.id == campaign_id).values(**values),
                              execution_options=NO_SYNC)


async def record_streak(session: AsyncSession, campaign_id: uuid.UUID, *, reset: bool, failures: int,
                        **deltas: int) -> tuple[int, int, int | None]:
    """Update the run of consecutive failures (reset first when a send succeeded) and, in the same statement,
    `counter = counter + delta` for each of `deltas`. Returns (the new run when it reached max_send_errors, else
    -1; spent; budget) as the statement left them, so the budget check that follows needs no read of its own."""
    names = tuple(sorted(deltas))

    def build(_: str) -> Any:
        base = 0 if reset else Campaign.consecutive_failures
        counters = {name: getattr(Campaign, name) + bindparam(f"d_{name}", type_=BigInteger()) for name in names}
        return (update(Campaign).where(Campaign.id == bindparam("cid"))
                .values(consecutive_failures=base + bindparam("failures", type_=BigInteger()), **counters)
                .returning(Campaign.consecutive_failures, Campaign.max_send_errors, Campaign.spent, Campaign.budget))

    stmt = _built(session, ("streak", reset, names), build)
    params = {"cid": campaign_id, "failures": failures, **{f"d_{name}": deltas[name] for name in names}}
    run, limit, spent, budget = (await session.execute(stmt, params, execution_options=NO_SYNC)).one()
    return (int(run) if int(run) >= int(limit) else -1), int(spent), budget


async def count_schedule_progress(session: AsyncSession, campaign_id: uuid.UUID, send_date: date, *,
                                  sent: int, handled: int) -> None:
    """A day's schedule row: `sent` more sent, `handled` fewer remaining (sent, failed or skipped)."""
    sch = CampaignSendSchedule

    def build(name: str) -> Any:
        left = sch.messages_remaining - bindparam("handled", type_=BigInteger())
        remaining = func.max(left, 0) if name == "sqlite" else func.greatest(left, 0)
        return (update(sch).where(sch.campaign_id == bindparam("cid"), sch.send_date == bindparam("day"),
                                  sch.batch_number == 1)
                .values(messages_sent=sch.messages_sent + bindparam("sent", type_=BigInteger()),
                        messages_remaining=remaining,
                        status=case((left <= 0, "completed"), else_="processing")))

    stmt = _built(session, "schedule_progress", build)
    await session.execute(stmt, {"cid": campaign_id, "day": send_date, "sent": sent, "handled": handled},
                          execution_options=NO_SYNC)


# --- events -------------------------------------------------------------------------------------------------

def event_row(tenant_id: uuid.UUID, campaign_id: uuid.UUID, recipient_id: int | None, contact_id: uuid.UUID | None,
           type_: str, at: datetime, metadata: dict[str, Any] | None = None,
           provider_message_id: str | None = None) -> dict[str, Any]:
    """One row for insert_events."""
    return {"tenant_id": tenant_id, "campaign_id": campaign_id, "recipient_id": recipient_id,
            "contact_id": contact_id, "type": type_, "occurred_at": at, "metadata": metadata,
            "provider_message_id": provider_message_id}


async def insert_events(session: AsyncSession, rows: list[dict[str, Any]]) -> None:
    """rows carry tenant_id, campaign_id, recipient_id, contact_id, type, occurred_at, metadata,
    provider_message_id (all keys present). On PostgreSQL a binary COPY in the session's transaction: 5 µs of
    client CPU a row at 1,000 rows, against 8 for a text COPY and 19 for psycopg's pipelined executemany (an
    INSERT … SELECT FROM unnest() and a multi-row VALUES cost more still). On SQLite an executemany of values
    already in stored form."""
    if not rows:
        return
    if dialect(session) == "postgresql":
        await _copy_events(session, rows)
    else:
        await _executemany_events(session, rows)


_EVENT_COLUMNS = ("tenant_id", "campaign_id", "recipient_id", "contact_id", "type", "occurred_at", "metadata",
                  "provider_message_id")
_COPY_EVENTS = f"COPY campaign_events ({', '.join(_EVENT_COLUMNS)}) FROM STDIN (FORMAT BINARY)"
_COPY_EVENT_TYPES = ("uuid", "uuid", "int8", "uuid", "varchar", "timestamptz", "jsonb", "varchar")  # binary: exact


_INSERT_EVENTS_SQLITE = (f"INSERT INTO campaign_events ({', '.join(_EVENT_COLUMNS)}) "
                         f"VALUES ({', '.join('?' * len(_EVENT_COLUMNS))})")


async def _executemany_events(session: AsyncSession, rows: list[dict[str, Any]]) -> None:
    # SQLAlchemy's processing of each value (uuid, JSON, datetime) was most of the insert's CPU: the values go to
    # the driver in the form those processors give (Uuid: 32 hex digits; JSON: json.dumps, None as JSON null;
    # occurred_at through the column's own processor), as contact imports do.
    conn = await session.connection()
    at = CampaignEvent.__table__.c.occurred_at.type._cached_bind_processor(conn.dialect)  # type: ignore[union-attr]
    raw = (await conn.get_raw_connection()).driver_connection
    dumps = json.dumps
    # A batch's events share their tenant, campaign and time: each converted once.
    ids, times = _Converted(lambda value: value.hex), _Converted(at)
    await raw.executemany(_INSERT_EVENTS_SQLITE, [
        (ids[row["tenant_id"]], ids[row["campaign_id"]], row["recipient_id"],
         None if row["contact_id"] is None else row["contact_id"].hex, row["type"], times[row["occurred_at"]],
         dumps(row["metadata"]), row["provider_message_id"]) for row in rows])


class _Converted(dict[Any, Any]):
    """convert(value), computed once per distinct value."""

    def __init__(self, convert: Callable[[Any], Any]) -> None:
        super().__init__()
        self.convert = convert

    def __missing__(self, value: Any) -> Any:
        converted = self[value] = self.convert(value)
        return converted


async def _copy_events(session: AsyncSession, rows: list[dict[str, Any]]) -> None:
    # The values get what the columns' own bind processing would give them: occurred_at through UTCDateTime's
    # (aware UTC, a naive time refused), metadata as JSONB with None stored as JSON null, like the JSON type.
    conn = await session.connection()
    at = CampaignEvent.__table__.c.occurred_at.type._cached_bind_processor(conn.dialect)  # type: ignore[union-attr]
    raw = (await conn.get_raw_connection()).driver_connection
    async with raw.cursor() as cursor, cursor.copy(_COPY_EVENTS) as copy:
        copy.set_types(list(_COPY_EVENT_TYPES))
        for row in rows:
            await copy.write_row((row["tenant_id"], row["campaign_id"], row["recipient_id"], row["contact_id"],
                                  row["type"], at(row["occurred_at"]), Jsonb(row["metadata"]),
                                  row["provider_message_id"]))


# The columns record_events reads of a recipient and may write back (sent_at only read, by the event writer
# that classifies clicks before recording them).
_EVENT_STATE = (R.id, R.tenant_id, R.campaign_id, R.contact_id, R.status, R.sent_at, R.delivered_at, R.opened_at,
                R.clicked_at, R.converted_at, R.failed_at, R.open_count, R.click_count, R.failure_reason)
_EVENT_WRITES = ("status", "delivered_at", "opened_at", "clicked_at", "converted_at", "failed_at", "open_count",
                 "click_count", "failure_reason")
_CHUNK = 5000  # ids per IN list, well under SQLite's limit on bound parameters


async def take_write_lock(session: AsyncSession) -> None:
    """SQLite: begin writing now (an UPDATE of no row), so what this transaction reads next stays true until
    it commits; pysqlite would otherwise read outside any transaction until the first write."""
    await session.execute(update(R).where(literal(False)).values(status=R.status), execution_options=NO_SYNC)


async def lock_recipients(session: AsyncSession, ids: set[int]) -> list[dict[str, Any]]:
    """The recipients' event state as dicts, locked until the transaction ends: FOR UPDATE in id order on
    PostgreSQL (concurrent writers never deadlock); on SQLite the database's write lock is taken first, so no
    other writer changes a row between this read and the write that follows it."""
    if not ids:
        return []
    if dialect(session) == "sqlite":
        await take_write_lock(session)
    ordered = sorted(ids)
    found: list[dict[str, Any]] = []
    for chunk in in_chunks(ordered, _CHUNK):
        stmt = _locked(dialect(session), select(*_EVENT_STATE).where(recipient_id_in(session, chunk)).order_by(R.id))
        found.extend(dict(row._mapping) for row in (await session.execute(stmt)).all())
    return found


async def update_recipients(session: AsyncSession, rows: list[dict[str, Any]], *, now: datetime,
                            changed: Collection[str] = _EVENT_WRITES) -> None:
    """Write record_events' new state of each row (keys as lock_recipients returned them) in one statement: the
    `changed` columns only (a batch of repeat opens changes open_count alone: one array sent instead of nine)."""
    names = [name for name in _EVENT_WRITES if name in changed]  # in a fixed order: one cached statement per set
    columns = {f"v_{name}": R.__table__.c[name].type for name in names}
    await _update_each(session, [{"rid": row["id"], **{f"v_{name}": row[name] for name in names}}
                                 for row in rows], columns,
                       lambda given: {"updated_at": _now(), **{name: given[f"v_{name}"] for name in names}},
                       key=("events", tuple(names)), params={"now": now})


_REF_COLUMNS = (R.id, R.tenant_id, R.campaign_id, R.contact_id, Campaign.channel, R.status, R.sent_at, R.email,
                R.phone, R.provider_message_id)


async def recipient_refs(session: AsyncSession, ids: set[int]) -> list[tuple[Any, ...]]:
    ordered = sorted(ids)
    found: list[tuple[Any, ...]] = []
    for chunk in in_chunks(ordered, _CHUNK):
        stmt = select(*_REF_COLUMNS).join(Campaign, Campaign.id == R.campaign_id).where(
            recipient_id_in(session, chunk))
        found.extend(tuple(row) for row in (await session.execute(stmt)).all())
    return found


async def recipient_ref(session: AsyncSession, *, recipient_id: int | None = None,
                        provider_message_id: str | None = None) -> tuple[Any, ...] | None:
    stmt = select(*_REF_COLUMNS).join(Campaign, Campaign.id == R.campaign_id)
    if recipient_id is not None:
        stmt = stmt.where(R.id == recipient_id)
    else:
        stmt = stmt.where(R.provider_message_id == provider_message_id).order_by(R.id).limit(1)
    row = (await session.execute(stmt)).first()
    return tuple(row) if row is not None else None


# --- campaign ticks -----------------------------------------------------------------------------------------

def of_tenant(stmt: Any, tenant_id: uuid.UUID | None) -> Any:
    """Worker ticks pass None (every tenant); a tenant's own process-daily call passes its id."""
    return stmt if tenant_id is None else stmt.where(Campaign.tenant_id == tenant_id)


async def due_scheduled_campaigns(session: AsyncSession, *, now: datetime, today: date,
                                  tenant_id: uuid.UUID | None = None) -> list[tuple[Any, ...]]:
    """(id, tenant_id) of scheduled campaigns whose start time has come; locked (skip-locked on PostgreSQL)."""
    stmt = of_tenant(select(Campaign.id, Campaign.tenant_id).where(
        Campaign.status == "scheduled",
        or_(Campaign.scheduled_at <= now, and_(Campaign.scheduled_at.is_(None), Campaign.start_date <= today))),
        tenant_id)
    if dialect(session) == "postgresql":
        stmt = stmt.with_for_update(skip_locked=True)
    return [tuple(row) for row in (await session.execute(stmt)).all()]


async def finished_running_campaigns(session: AsyncSession, *,
                                     tenant_id: uuid.UUID | None = None) -> list[tuple[Any, ...]]:
    """(id, tenant_id) of running campaigns with no recipient pending or sending."""
    unsent = select(R.id).where(R.campaign_id == Campaign.id, R.status.in_(("pending", "sending")))
    stmt = of_tenant(select(Campaign.id, Campaign.tenant_id).where(Campaign.status == "running",
                                                                    not_(exists(unsent))), tenant_id)
    if dialect(session) == "postgresql":
        stmt = stmt.with_for_update(skip_locked=True)
    return [tuple(row) for row in (await session.execute(stmt)).all()]


async def has_unsent(session: AsyncSession, campaign_id: uuid.UUID) -> bool:
    stmt = select(exists(select(R.id).where(R.campaign_id == campaign_id, R.status.in_(("pending", "sending")))))
    return bool((await session.execute(stmt)).scalar_one())


async def sending_campaign(session: AsyncSession, campaign_id: uuid.UUID) -> Campaign | None:
    return await session.get(Campaign, campaign_id)


# --- links and money ----------------------------------------------------------------------------------------

def url_hash(url: str) -> str:
    return hashlib.sha256(url.encode()).hexdigest()


async def upsert_links(session: AsyncSession, *, tenant_id: uuid.UUID, campaign_id: uuid.UUID,
                       urls: list[str]) -> dict[str, int]:
    hashes = {url: url_hash(url) for url in urls}
    stmt = (dialect_insert(session, CampaignLink.__table__)
            .values([{"tenant_id": tenant_id, "campaign_id": campaign_id, "url": url, "url_hash": digest}
                     for url, digest in hashes.items()])
            .on_conflict_do_nothing(index_elements=["campaign_id", "url_hash"]))
    await session.execute(stmt)
    found = select(CampaignLink.id, CampaignLink.url).where(
        CampaignLink.campaign_id == campaign_id, CampaignLink.url_hash.in_(list(hashes.values())))
    return {url: link_id for link_id, url in (await session.execute(found)).all()}


async def link(session: AsyncSession, link_id: int) -> tuple[Any, ...] | None:
    stmt = select(CampaignLink.id, CampaignLink.tenant_id, CampaignLink.campaign_id, CampaignLink.url).where(
        CampaignLink.id == link_id)
    row = (await session.execute(stmt)).first()
    return tuple(row) if row is not None else None


async def add_revenue(session: AsyncSession, *, tenant_id: uuid.UUID, campaign_id: uuid.UUID, amount: int) -> int:
    stmt = (update(Campaign).where(Campaign.id == campaign_id, Campaign.tenant_id == tenant_id)
            .values(revenue=Campaign.revenue + amount))
    return int((await session.execute(stmt, execution_options=NO_SYNC)).rowcount or 0)
