"""Queries of the webhook call log (tracking.webhooks_service)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import delete, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from clarion.kit.pagination import PageRows, keyset_page
from clarion.kit.repository import TenantRepository, dialect_insert
from clarion.models import WebhookCall

PURGE_CHUNK = 5000  # rows per DELETE: a big backlog is removed without one long lock


class WebhookCallRepo(TenantRepository[WebhookCall]):
    model = WebhookCall
    label = "webhook call"

    async def insert_once(self, values: dict[str, Any]) -> int | None:
        """Log the call unless this account already logged the same bytes; its id, or None for a replay. A
        concurrent identical call waits on the unique key (PostgreSQL) or the write lock (SQLite) and sees None."""
        stmt = (dialect_insert(self.session, WebhookCall.__table__)
                .values(tenant_id=self.tenant_id, **values)
                .on_conflict_do_nothing(index_elements=["channel_config_id", "body_sha256"])
                .returning(WebhookCall.__table__.c.id))
        return (await self.session.execute(stmt)).scalar_one_or_none()

    async def set_outcome(self, call_id: int, outcome: dict[str, Any]) -> None:
        await self.session.execute(
            update(WebhookCall).where(WebhookCall.tenant_id == self.tenant_id, WebhookCall.id == call_id)
            .values(outcome=outcome).execution_options(synchronize_session=False))

    async def page(self, *, provider: str | None, limit: int, cursor: str | None) -> PageRows[WebhookCall]:
        stmt = self.scoped()
        if provider is not None:
            stmt = stmt.where(WebhookCall.provider == provider)
        # Newest first: ids grow with arrival.
        return await keyset_page(self.session, stmt, WebhookCall.id, limit=limit, cursor=cursor, descending=True,
                                 key_type=int)


async def purge_received_before(session: AsyncSession, cutoff: datetime, *, chunk: int = PURGE_CHUNK) -> int:
    """UNSCOPED (the retention tick serves every tenant): delete calls received before `cutoff`, oldest first, a
    chunk per statement; returns how many went."""
    removed = 0
    while True:
        oldest = (select(WebhookCall.id).where(WebhookCall.received_at < cutoff)
                  .order_by(WebhookCall.received_at).limit(chunk).scalar_subquery())
        result = await session.execute(delete(WebhookCall).where(WebhookCall.id.in_(oldest))
                                       .execution_options(synchronize_session=False))
        count = int(result.rowcount or 0)
        removed += count
        if count < chunk:
            return removed
