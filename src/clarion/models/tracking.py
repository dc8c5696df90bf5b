"""Tracking's own records: clients seen per contact, the conversion ledger, bounces received, provider webhook
calls."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import BigInteger, ForeignKey, Index, String, Text, UniqueConstraint, Uuid
from sqlalchemy.orm import Mapped, mapped_column

from clarion.kit.clock import utcnow
from clarion.kit.types import BigIntPK
from clarion.models.base import Base, TenantOwned


class TrackingClient(TenantOwned, Base):
    """A client (address + user agent, hashed) that made a human open or click for a contact.

    A click right after the send from a client not in here is a link scanner's (clarion.tracking.machine).
    """

    __tablename__ = "tracking_clients"

    contact_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("contacts.id", ondelete="CASCADE"), primary_key=True)
    client_key: Mapped[str] = mapped_column(String(32), primary_key=True)
    first_seen_at: Mapped[datetime] = mapped_column(default=utcnow)


class Conversion(TenantOwned, Base):
    """One reported conversion and its revenue; the idempotency key makes a retried report count once."""

    __tablename__ = "conversions"
    __table_args__ = (
        UniqueConstraint("tenant_id", "idempotency_key"),
        Index(None, "campaign_id", "id"),
    )

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True, autoincrement=True)
    campaign_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("campaigns.id", ondelete="CASCADE"))
    recipient_id: Mapped[int | None] = mapped_column(
        BigIntPK, ForeignKey("campaign_recipients.id", ondelete="SET NULL"))
    contact_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("contacts.id", ondelete="SET NULL"))
    revenue: Mapped[int] = mapped_column(BigInteger, default=0)  # minor units of `currency`
    currency: Mapped[str] = mapped_column(String(3))
    occurred_at: Mapped[datetime]
    idempotency_key: Mapped[str | None] = mapped_column(String(255))
    metadata_: Mapped[dict[str, Any] | None] = mapped_column("metadata")
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class BounceRecord(TenantOwned, Base):
    """One bounced address from one bounce message; soft ones are counted per contact over a window."""

    __tablename__ = "bounce_records"
    __table_args__ = (Index(None, "contact_id", "kind", "occurred_at"),)

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True, autoincrement=True)
    contact_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("contacts.id", ondelete="CASCADE"))
    campaign_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("campaigns.id", ondelete="SET NULL"))
    recipient_id: Mapped[int | None] = mapped_column(
        BigIntPK, ForeignKey("campaign_recipients.id", ondelete="SET NULL"))
    email: Mapped[str] = mapped_column(String(320))
    kind: Mapped[str] = mapped_column(String(8))  # hard | soft
    action: Mapped[str | None] = mapped_column(String(16))
    status: Mapped[str | None] = mapped_column(String(16))
    diagnostic: Mapped[str | None] = mapped_column(Text)
    original_message_id: Mapped[str | None] = mapped_column(String(255))
    occurred_at: Mapped[datetime] = mapped_column(default=utcnow)


class WebhookCall(TenantOwned, Base):
    """One authentic provider webhook call, as received, for one channel account: the audit trail of what a provider
    said (kept CLARION_WEBHOOK_RETENTION_DAYS), and the key that makes an exact replay change nothing.

    A call that carries several accounts' entries (WhatsApp batches by business account) is one row per account.
    Signature and credential header values are not kept.
    """

    __tablename__ = "webhook_calls"
    __table_args__ = (
        # Same account, same bytes: a replay (providers retry on timeouts; an attacker may resend a signed call).
        UniqueConstraint("channel_config_id", "body_sha256", name="uq_webhook_calls_account_body"),
        Index("ix_webhook_calls_tenant_id_id", "tenant_id", "id"),
        Index("ix_webhook_calls_tenant_id_provider_id", "tenant_id", "provider", "id"),
        Index("ix_webhook_calls_received_at", "received_at"),
    )
    tenant_id_index = False  # ix_webhook_calls_tenant_id_id

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True, autoincrement=True)
    # The row outlives its account (the audit trail of a deleted channel stays until retention removes it).
    channel_config_id: Mapped[uuid.UUID | None] = mapped_column(
        Uuid(), ForeignKey("channel_configs.id", ondelete="SET NULL"))
    provider: Mapped[str] = mapped_column(String(32))
    kind: Mapped[str | None] = mapped_column(String(32))  # the /webhooks/<name>/<kind> segment: status, inbound …
    received_at: Mapped[datetime] = mapped_column(default=utcnow)
    headers: Mapped[dict[str, Any]] = mapped_column(default=dict)
    body: Mapped[str] = mapped_column(Text)
    body_sha256: Mapped[str] = mapped_column(String(64))
    # What the call did: statuses applied, unknown message ids, keywords, consent changes, or the parse error.
    outcome: Mapped[dict[str, Any] | None]
