"""Queries behind what providers report about sent messages (campaign.delivery_reports).

Scoped by the tenant the reporting channel account belongs to: a provider message id or a recipient id echoed
by one tenant's account never reaches another tenant's recipients.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import date
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from clarion.campaign.sending_repository import _REF_COLUMNS  # one row shape for every recipient look-up
from clarion.kit.repository import in_chunks
from clarion.models import Campaign, CampaignRecipient

R = CampaignRecipient


@dataclass(frozen=True, slots=True)
class RetryRow:
    id: int
    campaign_id: uuid.UUID
    retry_count: int
    scheduled_send_date: date | None
    max_attempts: int
    campaign_status: str


async def _reported(session: AsyncSession, tenant_id: uuid.UUID, column: Any,
                    values: list[Any]) -> list[tuple[Any, ...]]:
    """Rows of the recipient reference (campaign.sending.RecipientRef: the same columns as its own look-ups)."""
    found: list[tuple[Any, ...]] = []
    for chunk in in_chunks(values):
        # (tenant_id, provider_message_id) or the primary key answers it. No ORDER BY: SQLite would rather walk
        # the tenant's whole ix_..._tenant_id (rows come out in id order) than sort the few rows found.
        stmt = (select(*_REF_COLUMNS).join(Campaign, Campaign.id == R.campaign_id)
                .where(R.tenant_id == tenant_id, column.in_(chunk)))
        found.extend(tuple(row) for row in (await session.execute(stmt)).all())
    return sorted(found, key=lambda row: row[0])


async def by_provider_message_ids(session: AsyncSession, tenant_id: uuid.UUID,
                                  provider_message_ids: list[str]) -> list[tuple[Any, ...]]:
    return await _reported(session, tenant_id, R.provider_message_id, provider_message_ids)


async def by_ids(session: AsyncSession, tenant_id: uuid.UUID, recipient_ids: list[int]) -> list[tuple[Any, ...]]:
    return await _reported(session, tenant_id, R.id, recipient_ids)


async def still_sent(session: AsyncSession, ids: list[int]) -> list[RetryRow]:
    """The given recipients that are still `sent`, with what the retry rule needs. The caller holds their locks
    (sending_repository.lock_recipients) so nothing moves them before they are requeued (mark_retry)."""
    stmt = (select(R.id, R.campaign_id, R.retry_count, R.scheduled_send_date, Campaign.max_attempts, Campaign.status)
            .join(Campaign, Campaign.id == R.campaign_id)
            .where(R.id.in_(ids), R.status == "sent").order_by(R.id))
    return [RetryRow(*row) for row in (await session.execute(stmt)).all()]
