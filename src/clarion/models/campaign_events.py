"""What happened to a campaign's messages (the event log) and the links its messages carry.

On PostgreSQL the event log is PARTITION BY RANGE (occurred_at): one partition per calendar month in UTC
(`campaign_events_y2025m01`), created ahead of time by the `campaign.ensure_event_partitions` tick, and a DEFAULT
partition that takes any row no month covers yet, so an insert never fails for want of a partition. On SQLite
it is a plain table.
"""

from __future__ import annotations

import re
import uuid
from datetime import UTC, date, datetime
from typing import Any

from sqlalchemy import ForeignKey, Index, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from clarion.kit.clock import utcnow
from clarion.kit.types import BigIntPK
from clarion.models.base import Base, TenantOwned

EVENT_TYPES = ("sent", "failed", "skipped", "delivered", "opened", "clicked", "converted", "bounced",
               "unsubscribed", "complained", "cancelled")


class CampaignEvent(TenantOwned, Base):
    """One event of one campaign (seed 001's CampaignEvent). Append-only; counters live on the campaign.

    A partitioned table's primary key must hold the partition key, so on PostgreSQL the key is
    (id, occurred_at). `id` alone is still unique there (only its sequence assigns it, and moving a row between
    partitions keeps it), which is why it stays the ORM identity and the keyset of event pages.
    """

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


# --- monthly partitions (PostgreSQL) ------------------------------------------------------------------------

EVENTS_TABLE = "campaign_events"
EVENTS_DEFAULT_PARTITION = "campaign_events_default"
_MONTH_PARTITION = re.compile(r"^campaign_events_y(\d{4})m(\d{2})$")


def month_of(at: datetime | date) -> date:
    """The first day of `at`'s month (a datetime is taken in UTC, as the partition bounds are)."""
    if isinstance(at, datetime) and at.tzinfo is not None:
        at = at.astimezone(UTC)
    return date(at.year, at.month, 1)


def add_months(month: date, count: int) -> date:
    index = month.year * 12 + month.month - 1 + count
    return date(index // 12, index % 12 + 1, 1)


def event_month_partition(month: date) -> str:
    return f"campaign_events_y{month.year:04d}m{month.month:02d}"


def month_of_event_partition(name: str) -> date | None:
    """The month a partition named by event_month_partition covers; None for any other name."""
    match = _MONTH_PARTITION.match(name)
    return date(int(match[1]), int(match[2]), 1) if match else None


def is_event_partition(name: str) -> bool:
    """A partition of campaign_events: physical storage the ORM does not map (and autogenerate must not drop)."""
    return name == EVENTS_DEFAULT_PARTITION or month_of_event_partition(name) is not None


def event_partition_ddl(month: date | None) -> str:
    """CREATE TABLE IF NOT EXISTS for one month's partition, or the DEFAULT partition when `month` is None.
    The bounds are UTC month starts; the partition inherits the parent's columns, keys and indexes."""
    if month is None:
        return f"CREATE TABLE IF NOT EXISTS {EVENTS_DEFAULT_PARTITION} PARTITION OF {EVENTS_TABLE} DEFAULT"
    month = month_of(month)
    return (f"CREATE TABLE IF NOT EXISTS {event_month_partition(month)} PARTITION OF {EVENTS_TABLE} "
            f"FOR VALUES FROM ('{month.isoformat()} 00:00:00+00') TO ('{add_months(month, 1).isoformat()} 00:00:00+00')")
