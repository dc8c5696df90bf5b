"""What the send pipeline records about deliveries it made itself (the built-in outbox)."""

from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import Index, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from clarion.kit.clock import utcnow
from clarion.models.base import Base, TenantOwned, UUIDPrimaryKey


class OutboxMessage(UUIDPrimaryKey, TenantOwned, Base):
    """One message the outbox channel wrote to disk. The id is a uuid7, so id order is send order and the
    listing pages by id alone."""

    __tablename__ = "outbox_messages"
    __table_args__ = (Index(None, "tenant_id", "id"),)

    # No foreign key: the outbox is a log of what left, and it must keep (and accept) entries for test
    # sends and for campaigns deleted since.
    campaign_id: Mapped[uuid.UUID | None] = mapped_column(index=True)
    ref: Mapped[str] = mapped_column(String(200))
    to_addr: Mapped[str] = mapped_column(Text)
    subject: Mapped[str] = mapped_column(Text)
    # Relative to the data directory, so the data directory can move.
    path: Mapped[str] = mapped_column(Text)
    size: Mapped[int]
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
