"""Every query of the delivery domain."""

from __future__ import annotations

import uuid
from collections.abc import Sequence

from sqlalchemy import insert

from clarion.delivery.channels.base import OutboxEntry
from clarion.kit.pagination import PageRows, keyset_page
from clarion.kit.repository import TenantRepository
from clarion.models import OutboxMessage


class OutboxRepo(TenantRepository[OutboxMessage]):
    model = OutboxMessage
    label = "outbox message"

    async def add_entries(self, entries: Sequence[OutboxEntry]) -> None:
        if not entries:
            return
        if any(entry.tenant_id != self.tenant_id for entry in entries):
            raise ValueError("outbox entries of another tenant")
        await self.session.execute(insert(OutboxMessage), [
            {"id": e.id, "tenant_id": self.tenant_id, "campaign_id": e.campaign_id, "ref": e.ref,
             "to_addr": e.to, "subject": e.subject, "path": e.path, "size": e.size,
             "created_at": e.created_at}
            for e in entries
        ])

    async def page(self, *, limit: int, cursor: str | None,
                   campaign_id: uuid.UUID | None = None) -> PageRows[OutboxMessage]:
        stmt = self.scoped()
        if campaign_id is not None:
            stmt = stmt.where(OutboxMessage.campaign_id == campaign_id)
        # Newest first: ids are uuid7, so descending id is descending send time.
        return await keyset_page(self.session, stmt, OutboxMessage.id, limit=limit, cursor=cursor,
                                 descending=True, key_type=uuid.UUID)
