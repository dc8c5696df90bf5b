from __future__ import annotations

import uuid
from datetime import date, datetime
from typing import Any

from sqlalchemy import BigInteger, ForeignKey, Index, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from clarion.kit.types import BigIntPK
from clarion.models.base import Base, TenantOwned, Timestamps, UUIDPrimaryKey

# The counters a campaign keeps in step with its recipients' statuses (same transaction).
COUNTERS = ("total_target", "sent", "delivered", "opened", "clicked", "converted",
            "bounced", "failed", "skipped", "pending")


class Campaign(UUIDPrimaryKey, TenantOwned, Timestamps, Base):
    __tablename__ = "campaigns"
    __table_args__ = (Index(None, "tenant_id", "status"),)

    name: Mapped[str] = mapped_column(String(200))
    description: Mapped[str | None] = mapped_column(Text)
    type: Mapped[str] = mapped_column(String(16), default="broadcast")
    channel: Mapped[str] = mapped_column(String(16))
    status: Mapped[str] = mapped_column(String(20), default="draft")
    status_reason: Mapped[str | None] = mapped_column(Text)

    segment_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("segments.id", ondelete="RESTRICT"))
    filter: Mapped[dict[str, Any] | None]
    target_audience: Mapped[dict[str, Any] | None]
    template_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("templates.id", ondelete="RESTRICT"))
    # Seed 002 names the WhatsApp template on the campaign itself.
    template_name: Mapped[str | None] = mapped_column(String(512))
    language_code: Mapped[str | None] = mapped_column(String(16))
    template_components: Mapped[list[Any] | None]

    scheduled_at: Mapped[datetime | None]
    started_at: Mapped[datetime | None]
    completed_at: Mapped[datetime | None]
    start_date: Mapped[date | None]
    daily_send_limit: Mapped[int | None]
    priority: Mapped[int] = mapped_column(default=5)

    budget: Mapped[int | None] = mapped_column(BigInteger)
    spent: Mapped[int] = mapped_column(BigInteger, default=0)
    revenue: Mapped[int] = mapped_column(BigInteger, default=0)
    currency: Mapped[str] = mapped_column(String(3), default="USD")

    total_target: Mapped[int] = mapped_column(default=0)
    sent: Mapped[int] = mapped_column(default=0)
    delivered: Mapped[int] = mapped_column(default=0)
    opened: Mapped[int] = mapped_column(default=0)
    clicked: Mapped[int] = mapped_column(default=0)
    converted: Mapped[int] = mapped_column(default=0)
    bounced: Mapped[int] = mapped_column(default=0)
    failed: Mapped[int] = mapped_column(default=0)
    skipped: Mapped[int] = mapped_column(default=0)
    pending: Mapped[int] = mapped_column(default=0)


class CampaignRecipient(TenantOwned, Timestamps, Base):
    """One contact in one campaign. Integer ids: these rows are many and only ever read in campaign scope."""

    __tablename__ = "campaign_recipients"
    __table_args__ = (
        UniqueConstraint("campaign_id", "contact_id"),
        Index(None, "campaign_id", "status", "id"),
        Index(None, "contact_id"),
    )

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True, autoincrement=True)
    campaign_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("campaigns.id", ondelete="CASCADE"))
    contact_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("contacts.id", ondelete="CASCADE"))
    # Address cached at insert (seed 001): what the campaign targeted, even if the contact changes later.
    email: Mapped[str | None] = mapped_column(String(320))
    phone: Mapped[str | None] = mapped_column(String(20))
    status: Mapped[str] = mapped_column(String(16), default="pending")
    scheduled_send_date: Mapped[date | None]
    sent_at: Mapped[datetime | None]
    delivered_at: Mapped[datetime | None]
    opened_at: Mapped[datetime | None]
    clicked_at: Mapped[datetime | None]
    converted_at: Mapped[datetime | None]
    failed_at: Mapped[datetime | None]
    open_count: Mapped[int] = mapped_column(Integer, default=0)
    click_count: Mapped[int] = mapped_column(Integer, default=0)
    retry_count: Mapped[int] = mapped_column(Integer, default=0)
    failure_reason: Mapped[str | None] = mapped_column(Text)
    provider_message_id: Mapped[str | None] = mapped_column(String(255))
