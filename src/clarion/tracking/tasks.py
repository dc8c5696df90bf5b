"""Worker work of the tracking domain: polling the bounce Maildir (when Settings.bounce_maildir is set), and purging
provider webhook calls past their retention.

The Maildir is polled by a loop rather than a tick because each message is applied in its own transaction and only
then marked done in the Maildir: a crash in between re-applies a message, it never loses one.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import timedelta
from pathlib import Path

from sqlalchemy.ext.asyncio import AsyncSession

from clarion.config import Settings, get_settings
from clarion.db import Database
from clarion.tracking import maildir, service, webhooks_service
from clarion.worker import register_loop, register_tick

logger = logging.getLogger("clarion.tracking")

BATCH = 100


async def process_bounce_maildir(database: Database, path: Path, *, rules: service.BounceSettings,
                                 limit: int = BATCH) -> int:
    """Apply up to `limit` waiting bounce messages; returns how many were handled (ignored ones included)."""
    handled = 0
    for message in await asyncio.to_thread(maildir.claim, path, limit=limit):
        raw = await asyncio.to_thread(message.read_bytes)
        try:
            async with database.transaction() as session:
                outcome = await service.handle_bounce(session, raw, tenant_id=None, rules=rules)
        except Exception:  # one unreadable message must not stop the inbox
            logger.exception("bounce maildir: %s could not be applied; it stays claimed and is retried later",
                             message.name)
            continue
        if outcome.ignored:
            logger.info("bounce maildir: %s ignored (%s)", message.name, outcome.ignored)
        await asyncio.to_thread(maildir.mark_done, message)
        handled += 1
    return handled


async def poll_bounce_maildir(database: Database, settings: Settings, stop: asyncio.Event) -> None:
    if settings.bounce_maildir is None:
        await stop.wait()
        return
    rules = service.BounceSettings.from_settings(settings)
    while not stop.is_set():
        handled = await process_bounce_maildir(database, settings.bounce_maildir, rules=rules)
        if handled < BATCH:
            try:
                await asyncio.wait_for(stop.wait(), timeout=settings.bounce_poll_interval)
            except TimeoutError:
                pass


register_loop("tracking.bounce_maildir", poll_bounce_maildir)


async def purge_webhook_calls(session: AsyncSession) -> None:
    """Raw webhook bodies are kept for audit only so long (CLARION_WEBHOOK_RETENTION_DAYS)."""
    removed = await webhooks_service.purge_calls(session, retention_days=get_settings().webhook_retention_days)
    if removed:
        logger.info("purged %d webhook call(s) past their retention", removed)


register_tick("tracking.purge_webhook_calls", timedelta(hours=1), purge_webhook_calls)
