"""Upkeep of the event log's monthly partitions on PostgreSQL (a no-op on SQLite, whose table is plain).

Run by the singleton tick `campaign.ensure_event_partitions`. It makes sure the current month and the next
MONTHS_AHEAD have partitions, so rows arriving in them never wait in DEFAULT, and gives every month that has rows
in DEFAULT (events dated before the partitions existed, or far back: imported history, late webhooks) a partition
of its own, moving those rows there. Idempotent: a month that has its partition is left alone, and with nothing
to do it takes no lock. Until a month's partition exists its rows wait in DEFAULT, so a skipped run loses nothing.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import date, datetime

from sqlalchemy.ext.asyncio import AsyncSession

from clarion.campaign import event_partitions_repository as repo
from clarion.models.campaign_events import add_months, month_of

logger = logging.getLogger("clarion.campaign")

MONTHS_AHEAD = 3


@dataclass
class PartitionUpkeep:
    created: list[date] = field(default_factory=list)  # months whose partition this run created
    moved: int = 0  # rows moved out of DEFAULT into them


async def ensure_event_partitions(session: AsyncSession, *, now: datetime,
                                  months_ahead: int = MONTHS_AHEAD) -> PartitionUpkeep:
    if not repo.partitioned(session):
        return PartitionUpkeep()
    current = month_of(now)
    wanted = {add_months(current, n) for n in range(months_ahead + 1)}
    if not (wanted | await repo.months_in_default(session)) - await repo.existing_months(session):
        return PartitionUpkeep()
    # Something to create: lock, then look again, since rows may have reached DEFAULT meanwhile.
    if not await repo.lock_for_partitioning(session):
        logger.warning("event log: the tables stayed busy; the partitions are created at the next tick")
        return PartitionUpkeep()
    missing = sorted((wanted | await repo.months_in_default(session)) - await repo.existing_months(session))
    moved = await repo.create_months(session, missing)
    if missing:
        logger.info("event log: created the partitions of %s (%d event(s) moved out of the default partition)",
                    ", ".join(m.strftime("%Y-%m") for m in missing), moved)
    return PartitionUpkeep(created=missing, moved=moved)
