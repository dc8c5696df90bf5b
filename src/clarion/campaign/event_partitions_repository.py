"""The queries behind the event log's monthly partitions (PostgreSQL only; see models/campaign_events.py).

PostgreSQL refuses to create a month's partition while the DEFAULT partition holds rows of that month. So the
rows of the months about to be created are first moved out of DEFAULT into a temporary table, the partitions
are created, and the rows are inserted again through the parent, which routes them (ids unchanged). The whole
move is one transaction: a reader sees the rows in DEFAULT or in their month, never neither.

Creating a partition locks the event log exclusively, and the tables its foreign keys name against writes (the
keys are cloned onto the new partition). Writers take those tables in several orders (a send's outcome writes
recipients, then events, then the campaign; a skip writes the campaign before its events), so waiting for any
one of them while holding another could deadlock with a writer. Hence all are taken at once, without waiting:
if one is busy, the attempt is undone and made again shortly, a few times, and otherwise left to the next tick.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, date, datetime

from sqlalchemy import text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncSession

from clarion.kit.repository import dialect
from clarion.models import CampaignEvent
from clarion.models.campaign_events import (
    EVENTS_DEFAULT_PARTITION,
    EVENTS_TABLE,
    add_months,
    event_partition_ddl,
    month_of,
    month_of_event_partition,
)

_MOVING = "campaign_events_moving"
_LOCK_ATTEMPTS = 20
_LOCK_PAUSE_SECONDS = 0.05  # times the attempt number: about ten seconds in all
_LOCK_NOT_AVAILABLE = "55P03"


def partitioned(session: AsyncSession) -> bool:
    return dialect(session) == "postgresql"


async def existing_months(session: AsyncSession) -> set[date]:
    """The months that have a partition of their own."""
    rows = await session.execute(text(
        "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
        "WHERE i.inhparent = CAST(:parent AS regclass)"), {"parent": EVENTS_TABLE})
    return {month for (name,) in rows.all() if (month := month_of_event_partition(name)) is not None}


async def months_in_default(session: AsyncSession) -> set[date]:
    """The months of the rows waiting in DEFAULT (normally none: the tick creates months ahead of time)."""
    rows = await session.execute(text(
        f"SELECT DISTINCT date_trunc('month', occurred_at, 'UTC') FROM {EVENTS_DEFAULT_PARTITION} "
        "WHERE isfinite(occurred_at)"))
    return {month_of(at) for (at,) in rows.all()}


async def lock_for_partitioning(session: AsyncSession) -> bool:
    """Lock the event log (ACCESS EXCLUSIVE) and the tables its foreign keys name (SHARE ROW EXCLUSIVE) until the
    transaction ends, never waiting for a lock while holding another; False when they stayed busy."""
    referenced = sorted({fk.column.table.name for fk in CampaignEvent.__table__.foreign_keys})
    for attempt in range(1, _LOCK_ATTEMPTS + 1):
        try:
            async with session.begin_nested():
                await session.execute(text(f"LOCK TABLE {EVENTS_TABLE} IN ACCESS EXCLUSIVE MODE NOWAIT"))
                await session.execute(text(f"LOCK TABLE {', '.join(referenced)} IN SHARE ROW EXCLUSIVE MODE NOWAIT"))
            return True
        except DBAPIError as exc:
            if getattr(exc.orig, "sqlstate", None) != _LOCK_NOT_AVAILABLE:
                raise
        await asyncio.sleep(_LOCK_PAUSE_SECONDS * attempt)
    return False


async def create_months(session: AsyncSession, months: list[date]) -> int:
    """Create the months' partitions, moving their rows out of DEFAULT first; returns how many rows moved.
    The caller holds the locks (lock_for_partitioning) in this transaction."""
    if not months:
        return 0
    columns = ", ".join(f'"{column.name}"' for column in CampaignEvent.__table__.columns)
    bounds = " OR ".join(f"(occurred_at >= :lo{i} AND occurred_at < :hi{i})" for i in range(len(months)))
    params: dict[str, datetime] = {}
    for i, month in enumerate(months):
        params[f"lo{i}"] = _utc_start(month)
        params[f"hi{i}"] = _utc_start(add_months(month, 1))
    await session.execute(text(f"CREATE TEMPORARY TABLE {_MOVING} (LIKE {EVENTS_TABLE}) ON COMMIT DROP"))
    moved = await session.execute(text(
        f"WITH moved AS (DELETE FROM {EVENTS_DEFAULT_PARTITION} WHERE {bounds} RETURNING {columns}) "
        f"INSERT INTO {_MOVING} ({columns}) SELECT {columns} FROM moved"), params)
    for month in months:
        await session.execute(text(event_partition_ddl(month)))
    await session.execute(text(f"INSERT INTO {EVENTS_TABLE} ({columns}) SELECT {columns} FROM {_MOVING}"))
    await session.execute(text(f"DROP TABLE {_MOVING}"))
    return int(moved.rowcount or 0)


def _utc_start(month: date) -> datetime:
    return datetime(month.year, month.month, 1, tzinfo=UTC)
