from __future__ import annotations

import uuid
from datetime import datetime

from pydantic import BaseModel

from clarion.models import OutboxMessage


class OutboxEntryRead(BaseModel):
    id: uuid.UUID
    campaign_id: uuid.UUID | None
    to: str
    subject: str
    size: int
    created_at: datetime

    @classmethod
    def of(cls, row: OutboxMessage) -> OutboxEntryRead:
        return cls(id=row.id, campaign_id=row.campaign_id, to=row.to_addr, subject=row.subject, size=row.size,
                   created_at=row.created_at)


class OutboxPage(BaseModel):
    items: list[OutboxEntryRead]
    next_cursor: str | None = None
