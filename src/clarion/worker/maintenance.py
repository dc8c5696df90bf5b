"""The worker's own upkeep, registered like any domain's tick."""

from __future__ import annotations

import logging
from datetime import timedelta

from sqlalchemy.ext.asyncio import AsyncSession

from clarion.config import get_settings
from clarion.kit.clock import utcnow
from clarion.worker import repository
from clarion.worker.registry import register_tick

logger = logging.getLogger("clarion.worker")


async def prune_succeeded_jobs(session: AsyncSession) -> None:
    """Succeeded jobs are history nobody reads after a while; dead ones stay until someone looks at them."""
    cutoff = utcnow() - timedelta(days=get_settings().job_retention_days)
    removed = await repository.prune_succeeded(session, finished_before=cutoff)
    if removed:
        logger.info("pruned %d succeeded job(s) finished before %s", removed, cutoff.isoformat())


register_tick("worker.prune_succeeded_jobs", timedelta(hours=1), prune_succeeded_jobs)
