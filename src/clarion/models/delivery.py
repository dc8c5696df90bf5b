"""Delivery: the channel accounts of each tenant, the shared throughput buckets, and what the built-in outbox
recorded about the messages it wrote."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import BigInteger, CheckConstraint, Double, Index, String, Text, UniqueConstraint, text
from sqlalchemy.orm import Mapped, mapped_column

from clarion.kit.clock import utcnow
from clarion.models.base import Base, TenantOwned, Timestamps, UUIDPrimaryKey


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


CHANNELS = ("email", "sms", "whatsapp", "telegram", "push")


class ChannelConfig(UUIDPrimaryKey, TenantOwned, Timestamps, Base):
    """A tenant's account at a channel provider (an SMTP server, a Twilio account …). `config` is the provider's
    config model as JSON with every secret field encrypted (kit.crypto.encrypt_config); never shown in clear."""

    __tablename__ = "channel_configs"
    __table_args__ = (
        UniqueConstraint("tenant_id", "name"),
        # At most one default per tenant and channel; the service clears the old default first, the index
        # turns a race between two requests into a Conflict instead of two defaults.
        Index("uq_channel_configs_default", "tenant_id", "channel", unique=True,
              postgresql_where=text("is_default"), sqlite_where=text("is_default")),
        CheckConstraint(f"channel IN {CHANNELS!r}", name="channel"),
        CheckConstraint("rate_limit_per_second IS NULL OR rate_limit_per_second > 0", name="rate_positive"),
        CheckConstraint("cost_per_message >= 0", name="cost_not_negative"),
        # /webhooks/<name> finds the accounts a call names by these two (clarion.tracking.webhooks_service).
        Index("ix_channel_configs_provider_webhook_account", "provider", "webhook_account"),
    )

    channel: Mapped[str] = mapped_column(String(16))
    provider: Mapped[str] = mapped_column(String(32))
    name: Mapped[str] = mapped_column(String(200))
    config: Mapped[dict[str, Any]] = mapped_column(default=dict)
    enabled: Mapped[bool] = mapped_column(default=True)
    is_default: Mapped[bool] = mapped_column(default=False)
    from_email: Mapped[str | None] = mapped_column(String(320))
    reply_to: Mapped[str | None] = mapped_column(String(320))
    # Messages per second across all workers; NULL means the provider's default (which may be "unlimited").
    # A float, because small relays and some SMS routes allow less than one message a second.
    rate_limit_per_second: Mapped[float | None] = mapped_column(Double)
    cost_per_message: Mapped[int] = mapped_column(BigInteger, default=0)  # minor units of `currency`
    currency: Mapped[str] = mapped_column(String(3), default="USD")
    # What the provider's webhook calls name this account by, in the clear (a Twilio AccountSid, a WhatsApp
    # phone_number_id): set from the config on every save, so a call finds its candidate accounts without
    # decrypting every config. NULL for providers that receive no webhooks.
    webhook_account: Mapped[str | None] = mapped_column(String(200))


class RateBucket(Base):
    """The shared throughput budget of one channel account (delivery.throttle): the virtual time at which the
    next message may go, in epoch seconds of the database's clock. Not tenant-owned: the key names the account
    (a channel config id, or the outbox of a tenant), rows are tiny and only ever touched by key."""

    __tablename__ = "rate_buckets"

    key: Mapped[str] = mapped_column(String(200), primary_key=True)
    # Epoch seconds as a double: microsecond resolution, and arithmetic in SQL is the same on both databases.
    next_free_at: Mapped[float] = mapped_column(Double)
