"""What happened to a campaign's messages (the event log) and the links its messages carry."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import ForeignKey, Index, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from clarion.kit.clock import utcnow
from clarion.kit.types import BigIntPK
from clarion.models.base import Base, TenantOwned

EVENT_TYPES = ("sent", "failed", "skipped", "delivered", "opened", "clicked", "converted", "bounced",
               "unsubscribed", "complained", "cancelled")


class CampaignEvent(TenantOwned, Base):
    """One event of one campaign (seed 001's CampaignEvent). Append-only; counters live on the campaign."""

    __tablename__ = "campaign_events"
    __table_args__ = (
        Index(None, "campaign_id", "type", "id"),
        Index(None, "campaign_id", "id"),
        Index(None, "recipient_id"),
    )

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True, autoincrement=True)
    campaign_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("campaigns.id", ondelete="CASCADE"))
    recipient_id: Mapped[int | None] = mapped_column(
        BigIntPK, ForeignKey("campaign_recipients.id", ondelete="CASCADE"))
    # History outlives the contact: a deleted contact leaves its events behind, unnamed.
    contact_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("contacts.id", ondelete="SET NULL"))
    type: Mapped[str] = mapped_column(String(32))
    occurred_at: Mapped[datetime] = mapped_column(default=utcnow)
    # `metadata` is reserved on declarative classes, hence the attribute name; the column is "metadata".
    # ip, user_agent, url, flags ({"machine": true} for prefetchers and scanners).
    metadata_: Mapped[dict[str, Any] | None] = mapped_column("metadata")
    provider_message_id: Mapped[str | None] = mapped_column(String(255))


class CampaignLink(TenantOwned, Base):
    """A URL a campaign's messages link to; tracked clicks name the link by id, never the URL itself.

    Unique per campaign through a hash of the URL: a btree index on the text itself would refuse long URLs
    on PostgreSQL (about 2.7 kB per index row).
    """

    __tablename__ = "campaign_links"
    __table_args__ = (UniqueConstraint("campaign_id", "url_hash"),)

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True, autoincrement=True)
    campaign_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("campaigns.id", ondelete="CASCADE"))
    url: Mapped[str] = mapped_column(Text)
    url_hash: Mapped[str] = mapped_column(String(64))  # sha256 hex of url
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
