from __future__ import annotations

import uuid
from datetime import date, datetime
from typing import Any

from sqlalchemy import BigInteger, ForeignKey, Index, Integer, String, Text, UniqueConstraint, Uuid
from sqlalchemy.orm import Mapped, mapped_column

from clarion.kit.types import BigIntPK
from clarion.models.base import Base, TenantOwned, Timestamps, UUIDPrimaryKey

# The counters a campaign keeps in step with its recipients' statuses (same transaction).
COUNTERS = ("total_target", "sent", "delivered", "opened", "clicked", "converted",
            "bounced", "failed", "skipped", "pending")

# A recipient's statuses. `sending` = claimed by a worker under a lease; seed 002's "queued" is our `sent`.
RECIPIENT_STATUSES = ("pending", "sending", "sent", "delivered", "opened", "clicked", "converted",
                      "failed", "bounced", "skipped", "cancelled")


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
    # {"start_hour": 9, "end_hour": 17, "weekdays": [0..6]} (Monday = 0) or NULL for any time of any day.
    send_window: Mapped[dict[str, Any] | None]
    # When true each contact's own timezone decides when its slot opens; contacts without one use UTC.
    local_time: Mapped[bool] = mapped_column(default=False)

    # Sending: who it comes from and through which channel account. No foreign key into delivery's
    # channel_configs: campaign is the lower layer; delivery resolves (and falls back from) a missing config.
    from_email: Mapped[str | None] = mapped_column(String(320))
    from_name: Mapped[str | None] = mapped_column(String(200))
    reply_to: Mapped[str | None] = mapped_column(String(320))
    channel_config_id: Mapped[uuid.UUID | None] = mapped_column(Uuid())
    track_opens: Mapped[bool] = mapped_column(default=True)
    track_clicks: Mapped[bool] = mapped_column(default=True)
    # The campaign pauses itself when this many sends in a row failed; any success resets the streak.
    max_send_errors: Mapped[int] = mapped_column(default=50)
    consecutive_failures: Mapped[int] = mapped_column(default=0)
    # Attempts per recipient before a transient failure becomes final.
    max_attempts: Mapped[int] = mapped_column(default=3)
    # Claims made on one UTC day, so recipients left over from earlier days never push a day past
    # daily_send_limit.
    daily_sent_date: Mapped[date | None]
    daily_sent_count: Mapped[int] = mapped_column(default=0)

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
    # Every open/click, machine ones (prefetchers, scanners) included; `opened`/`clicked` count unique humans.
    opened_total: Mapped[int] = mapped_column(default=0)
    clicked_total: Mapped[int] = mapped_column(default=0)


class CampaignRecipient(TenantOwned, Timestamps, Base):
    """One contact in one campaign. Integer ids: these rows are many and only ever read in campaign scope."""

    __tablename__ = "campaign_recipients"
    __table_args__ = (
        UniqueConstraint("campaign_id", "contact_id"),
        Index(None, "campaign_id", "status", "id"),
        # The claim: due pending rows of one campaign, oldest slot first.
        Index(None, "campaign_id", "status", "send_after"),
        # Crash recovery: `sending` rows whose lease ran out.
        Index(None, "status", "lease_expires_at"),
        Index(None, "contact_id"),
        Index(None, "provider_message_id"),
        # Provider webhooks find a tenant's recipients by the message ids a call reports (migration 0002): with
        # only the single-column indexes SQLite's planner scans the whole tenant through ix_..._tenant_id.
        Index("ix_campaign_recipients_tenant_id_provider_message_id", "tenant_id", "provider_message_id"),
    )

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True, autoincrement=True)
    campaign_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("campaigns.id", ondelete="CASCADE"))
    contact_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("contacts.id", ondelete="CASCADE"))
    # Address cached at insert (seed 001): what the campaign targeted, even if the contact changes later.
    email: Mapped[str | None] = mapped_column(String(320))
    phone: Mapped[str | None] = mapped_column(String(20))
    status: Mapped[str] = mapped_column(String(16), default="pending")
    scheduled_send_date: Mapped[date | None]
    # The UTC instant from which the recipient may be sent; NULL = not planned yet.
    send_after: Mapped[datetime | None]
    # Set while a worker holds the row in `sending`; an expired lease hands the row back to `pending`.
    lease_owner: Mapped[str | None] = mapped_column(String(128))
    lease_expires_at: Mapped[datetime | None]
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
    # The channel account the message was claimed for and sent through (no foreign key, as on campaigns).
    channel_config_id: Mapped[uuid.UUID | None] = mapped_column(Uuid())


class AccountReach(TenantOwned, Base):
    """Who a channel account with a messaging-limit tier (WhatsApp) has messaged, and when last: one row per
    account and contact, moved forward by every claim through the account. The tier's rolling 24-hour count
    of distinct people is then a range of one index, not a DISTINCT over every recipient in the window."""

    __tablename__ = "account_reach"
    __table_args__ = (Index(None, "channel_config_id", "last_messaged_at"),)

    # No foreign key, as on campaigns: campaign is below delivery, which owns channel_configs.
    channel_config_id: Mapped[uuid.UUID] = mapped_column(Uuid(), primary_key=True)
    contact_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("contacts.id", ondelete="CASCADE"), primary_key=True)
    last_messaged_at: Mapped[datetime]


class CampaignSendSchedule(TenantOwned, Timestamps, Base):
    """Seed 002's per-day plan: how many recipients a campaign sends on one day, and how many are left."""

    __tablename__ = "campaign_send_schedule"
    __table_args__ = (UniqueConstraint("campaign_id", "send_date", "batch_number"),)

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True, autoincrement=True)
    campaign_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("campaigns.id", ondelete="CASCADE"))
    send_date: Mapped[date]
    batch_number: Mapped[int] = mapped_column(default=1)
    batch_size: Mapped[int]
    messages_sent: Mapped[int] = mapped_column(default=0)
    messages_remaining: Mapped[int]
    status: Mapped[str] = mapped_column(String(16), default="pending")  # pending | processing | completed
