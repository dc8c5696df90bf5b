"""The campaign ticks: start scheduled campaigns, complete finished ones, hand back expired leases, keep the
event log's monthly partitions (PostgreSQL) ahead of time.

Each is a singleton tick (one worker per interval runs it) and is idempotent besides: the rows it acts on
are taken with SKIP LOCKED on PostgreSQL and re-checked under lock, so two workers running it at once do
each change once.
"""

from __future__ import annotations

import logging
from datetime import timedelta

from sqlalchemy.ext.asyncio import AsyncSession

from clarion.campaign import claims, event_partitions, sending
from clarion.kit.clock import utcnow
from clarion.worker import register_tick

logger = logging.getLogger("clarion.campaign")


async def start_due_campaigns(session: AsyncSession) -> None:
    started = await sending.start_due_campaigns(session, now=utcnow())
    if started:
        logger.info("started %d scheduled campaign(s)", len(started))


async def complete_finished_campaigns(session: AsyncSession) -> None:
    completed = await sending.complete_finished_campaigns(session, now=utcnow())
    if completed:
        logger.info("completed %d campaign(s)", len(completed))


async def release_expired_leases(session: AsyncSession) -> None:
    released = await claims.release_expired_leases(session, now=utcnow())
    if released:
        logger.warning("handed %d recipient(s) with expired send leases back to pending", released)


async def ensure_event_partitions(session: AsyncSession) -> None:
    await event_partitions.ensure_event_partitions(session, now=utcnow())


register_tick("campaign.start_due", timedelta(seconds=15), start_due_campaigns)
register_tick("campaign.complete_finished", timedelta(seconds=30), complete_finished_campaigns)
register_tick("campaign.release_expired_leases", timedelta(seconds=30), release_expired_leases)
# Months are created a quarter ahead, so an hourly look is plenty; it also drains DEFAULT of late-dated rows.
register_tick("campaign.ensure_event_partitions", timedelta(hours=1), ensure_event_partitions)
