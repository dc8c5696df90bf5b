"""The outbox: building the provider for a tenant, its database index, and reading entries back."""

from __future__ import annotations

import asyncio
import uuid
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path

from sqlalchemy.ext.asyncio import AsyncSession

from clarion.db import Database
from clarion.delivery.channels.base import OutboxEntry, ProviderContext
from clarion.delivery.channels.outbox import OUTBOX_DIR, OutboxConfig, OutboxProvider
from clarion.delivery.repository import OutboxRepo
from clarion.errors import NotFound
from clarion.kit.pagination import PageRows
from clarion.models import OutboxMessage


def _by_tenant(entries: Sequence[OutboxEntry]) -> dict[uuid.UUID, list[OutboxEntry]]:
    groups: dict[uuid.UUID, list[OutboxEntry]] = defaultdict(list)
    for entry in entries:
        groups[entry.tenant_id].append(entry)
    return groups


class DatabaseOutboxIndex:
    """Indexes in a transaction of its own, committed before send() returns: like a mail server's 250, the
    message has left whatever becomes of the caller's transaction. On SQLite, do not call send() while
    holding an uncommitted write, or this commit waits on that lock."""

    def __init__(self, database: Database) -> None:
        self.database = database

    async def record(self, entries: Sequence[OutboxEntry]) -> None:
        async with self.database.transaction() as session:
            for tenant_id, group in _by_tenant(entries).items():
                await OutboxRepo(session, tenant_id).add_entries(group)


class SessionOutboxIndex:
    """Indexes in the caller's transaction: the listing then shows exactly what the caller committed as sent
    (a rolled-back batch leaves files without entries, which the listing never shows)."""

    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def record(self, entries: Sequence[OutboxEntry]) -> None:
        for tenant_id, group in _by_tenant(entries).items():
            await OutboxRepo(self.session, tenant_id).add_entries(group)
        await self.session.flush()


def outbox_provider(index: DatabaseOutboxIndex | SessionOutboxIndex, data_dir: Path,
                    tenant_id: uuid.UUID, *, public_base_url: str | None = None) -> OutboxProvider:
    """The email provider of a tenant with no email channel configured."""
    return OutboxProvider(OutboxConfig(data_dir=data_dir, tenant_id=tenant_id),
                          ProviderContext(outbox_index=index, public_base_url=public_base_url))


async def list_outbox(session: AsyncSession, tenant_id: uuid.UUID, *, limit: int, cursor: str | None,
                      campaign_id: uuid.UUID | None = None) -> PageRows[OutboxMessage]:
    return await OutboxRepo(session, tenant_id).page(limit=limit, cursor=cursor, campaign_id=campaign_id)


async def read_raw(session: AsyncSession, tenant_id: uuid.UUID, entry_id: uuid.UUID, data_dir: Path) -> bytes:
    entry = await OutboxRepo(session, tenant_id).get(entry_id)
    root = (data_dir / OUTBOX_DIR).resolve()
    path = (data_dir / entry.path).resolve()
    if not path.is_relative_to(root):
        # Paths are written by the provider, never by users; anything else is a corrupted row.
        raise NotFound(f"outbox message {entry_id} has no file")
    try:
        return await asyncio.to_thread(path.read_bytes)
    except FileNotFoundError:
        raise NotFound(f"the file of outbox message {entry_id} is gone from {OUTBOX_DIR}/") from None
