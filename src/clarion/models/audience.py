from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import ForeignKey, Index, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column, relationship

from clarion.kit.clock import utcnow
from clarion.models.base import Base, TenantOwned, Timestamps, UUIDPrimaryKey

CHANNELS = ("email", "sms", "whatsapp", "telegram", "push")
SUBSCRIPTION_STATUSES = ("subscribed", "unsubscribed", "bounced", "complained")
SUPPRESSION_REASONS = ("bounced", "complained", "unsubscribed", "manual")


class Contact(UUIDPrimaryKey, TenantOwned, Timestamps, Base):
    __tablename__ = "contacts"
    __table_args__ = (
        # NULLs never collide in a UNIQUE index on either database, so contacts without email/phone coexist.
        UniqueConstraint("tenant_id", "email"),
        UniqueConstraint("tenant_id", "phone"),
    )

    email: Mapped[str | None] = mapped_column(String(320))
    phone: Mapped[str | None] = mapped_column(String(20))
    first_name: Mapped[str | None] = mapped_column(String(200))
    last_name: Mapped[str | None] = mapped_column(String(200))
    locale: Mapped[str | None] = mapped_column(String(35))
    timezone: Mapped[str | None] = mapped_column(String(64))
    attributes: Mapped[dict[str, Any]] = mapped_column(default=dict)
    tags: Mapped[list[str]] = mapped_column(default=list)

    subscriptions: Mapped[list[ContactSubscription]] = relationship(
        lazy="selectin", cascade="all, delete-orphan", passive_deletes=True
    )


class ContactSubscription(TenantOwned, Base):
    """Consent per contact and channel; no row means the contact never had that channel."""

    __tablename__ = "contact_subscriptions"
    __table_args__ = (Index(None, "tenant_id", "channel", "status"),)

    contact_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("contacts.id", ondelete="CASCADE"), primary_key=True)
    channel: Mapped[str] = mapped_column(String(16), primary_key=True)
    status: Mapped[str] = mapped_column(String(16))
    changed_at: Mapped[datetime] = mapped_column(default=utcnow)
    source: Mapped[str] = mapped_column(String(64), default="api")


class Segment(UUIDPrimaryKey, TenantOwned, Timestamps, Base):
    __tablename__ = "segments"

    name: Mapped[str] = mapped_column(String(200))
    description: Mapped[str | None]
    kind: Mapped[str] = mapped_column(String(16))  # dynamic | static
    filter: Mapped[dict[str, Any] | None]


class SegmentMember(TenantOwned, Base):
    __tablename__ = "segment_members"
    __table_args__ = (Index(None, "contact_id"),)

    segment_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("segments.id", ondelete="CASCADE"), primary_key=True)
    contact_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("contacts.id", ondelete="CASCADE"), primary_key=True)
    added_at: Mapped[datetime] = mapped_column(default=utcnow)


class Suppression(UUIDPrimaryKey, TenantOwned, Base):
    """An address that never receives marketing on a channel, whatever its contact's state (or whether a
    contact with it exists at all): it outlives deleting and re-importing the contact."""

    __tablename__ = "suppressions"
    # Also the index behind the send path's correlated NOT EXISTS (tenant, channel, contact's address).
    __table_args__ = (UniqueConstraint("tenant_id", "channel", "address"),)

    channel: Mapped[str] = mapped_column(String(16))
    address: Mapped[str] = mapped_column(String(320))  # normalised: lower-cased email, E.164 phone
    reason: Mapped[str] = mapped_column(String(16))  # one of SUPPRESSION_REASONS
    note: Mapped[str | None] = mapped_column(String(1000))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
