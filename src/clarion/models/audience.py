from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import ForeignKey, Index, String, UniqueConstraint, text
from sqlalchemy.orm import Mapped, mapped_column, relationship

from clarion.kit.clock import utcnow
from clarion.models.base import Base, TenantOwned, Timestamps, UUIDPrimaryKey

CHANNELS = ("email", "sms", "whatsapp", "telegram", "push")
# A channel's bit in contacts.default_subscribed_channels. Stored: new channels take new bits, never reorder.
CHANNEL_BITS = {channel: 1 << position for position, channel in enumerate(CHANNELS)}
SUBSCRIPTION_STATUSES = ("subscribed", "unsubscribed", "bounced", "complained")
SUPPRESSION_REASONS = ("bounced", "complained", "unsubscribed", "manual")


class Contact(UUIDPrimaryKey, TenantOwned, Timestamps, Base):
    __tablename__ = "contacts"
    __table_args__ = (
        # NULLs never collide in a UNIQUE index on either database, so contacts without email/phone coexist.
        UniqueConstraint("tenant_id", "email"),
        # Partial (migration 0007): a contact without a phone, most of an import, takes no entry. Same rule, as
        # NULLs never collide; lookups by phone compare it, which implies the index's condition.
        Index("uq_contacts_tenant_id_phone", "tenant_id", "phone", unique=True,
              sqlite_where=text("phone IS NOT NULL"), postgresql_where=text("phone IS NOT NULL")),
        # A Telegram chat belongs to one contact of a tenant; a unique index, not a constraint, so the migration
        # adds it without rebuilding the table on SQLite. Partial: almost no contact has a chat, and a full index
        # would take an entry for every contact written (an import's million).
        Index(None, "tenant_id", "telegram_chat_id", unique=True,
              sqlite_where=text("telegram_chat_id IS NOT NULL"), postgresql_where=text("telegram_chat_id IS NOT NULL")),
    )

    # UNIQUE(tenant_id, email) holds every contact (NULL emails too, on both databases): one b-tree less to update
    # per contact written (an import writes a million).
    tenant_id_index = False
    email: Mapped[str | None] = mapped_column(String(320))
    phone: Mapped[str | None] = mapped_column(String(20))
    first_name: Mapped[str | None] = mapped_column(String(200))
    last_name: Mapped[str | None] = mapped_column(String(200))
    locale: Mapped[str | None] = mapped_column(String(35))
    timezone: Mapped[str | None] = mapped_column(String(64))
    attributes: Mapped[dict[str, Any]] = mapped_column(default=dict)
    tags: Mapped[list[str]] = mapped_column(default=list)
    # The private chat with the tenant's Telegram bot, set when the person opened the contact's /start deep link.
    telegram_chat_id: Mapped[str | None] = mapped_column(String(32))
    # Default consent is stored implicitly, so creating a contact (an import: a million of them) writes no
    # subscription rows. On each channel whose CHANNEL_BITS bit is set here (those of the addresses it was created
    # with) the contact is subscribed, since its creation and by `created_via`, until a contact_subscriptions row
    # for that channel exists; from then on the row alone decides (see audience.consent).
    default_subscribed_channels: Mapped[int] = mapped_column(default=0, server_default=text("0"))
    created_via: Mapped[str] = mapped_column(String(64), default="api", server_default="api")

    subscriptions: Mapped[list[ContactSubscription]] = relationship(
        lazy="selectin", cascade="all, delete-orphan", passive_deletes=True
    )


class ContactSubscription(TenantOwned, Base):
    """Consent per contact and channel, where it differs from (or replaced) the contact's default: no row means
    subscribed on the contact's default channels (Contact.default_subscribed_channels), no consent elsewhere."""

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


class PushSubscription(UUIDPrimaryKey, TenantOwned, Base):
    """A browser's Web Push subscription (PushSubscription.toJSON()) for a contact; a contact may have several
    (one per browser and device)."""

    __tablename__ = "push_subscriptions"
    __table_args__ = (UniqueConstraint("tenant_id", "endpoint"), Index(None, "contact_id"))
    tenant_id_index = False  # UNIQUE(tenant_id, endpoint)

    contact_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("contacts.id", ondelete="CASCADE"))
    endpoint: Mapped[str] = mapped_column(String(2048))
    p256dh: Mapped[str] = mapped_column(String(100))  # the browser's P-256 public key, base64url
    auth: Mapped[str] = mapped_column(String(32))  # the 16-byte auth secret, base64url
    user_agent: Mapped[str | None] = mapped_column(String(500))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)
    last_success_at: Mapped[datetime | None]
