"""What providers report about messages after the send (webhook statuses), on the campaign's side: finding the
recipients a report names, and giving a message the provider failed "for now" another attempt.

Statuses themselves move recipients through campaign.sending.record_events (forward-only, counted once); this
module only adds what that state machine does not do: moving a `sent` recipient back to `pending`.
Works within one tenant (the reporting account's). Flushes, never commits.
"""

from __future__ import annotations

import uuid
from collections import Counter, defaultdict
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy.ext.asyncio import AsyncSession

from clarion.campaign import delivery_reports_repository as repo
from clarion.campaign import sending_repository
from clarion.campaign.sending import RETRY_BASE_SECONDS, RETRY_CAP_SECONDS, RecipientRef
from clarion.worker import backoff_delay

ReportedRecipient = RecipientRef
# A campaign that can still send a requeued recipient; any other (completed, cancelled …) would never claim it,
# and a campaign is never completed while a recipient is pending.
_CAN_RESEND = frozenset({"running", "paused"})


@dataclass(frozen=True, slots=True)
class LateFailure:
    recipient_id: int
    reason: str


async def find_reported(session: AsyncSession, tenant_id: uuid.UUID, *, provider_message_ids: set[str],
                        recipient_ids: set[int]) -> tuple[dict[str, ReportedRecipient], dict[int, ReportedRecipient]]:
    """The tenant's recipients named by provider message id, and by recipient id (a ref the provider echoed):
    two indexed queries (one when there are no refs), whatever the number of statuses in the call."""
    by_message: dict[str, ReportedRecipient] = {}
    if provider_message_ids:
        for row in await repo.by_provider_message_ids(session, tenant_id, sorted(provider_message_ids)):
            ref = RecipientRef(*row)
            # A provider message id names one message; should two recipients carry it, the first sent keeps it.
            by_message.setdefault(ref.provider_message_id or "", ref)
    by_id: dict[int, ReportedRecipient] = {}
    if recipient_ids:
        by_id = {row[0]: RecipientRef(*row) for row in await repo.by_ids(session, tenant_id, sorted(recipient_ids))}
    return by_message, by_id


async def retry_late_failures(session: AsyncSession, failures: list[LateFailure], *, now: datetime) -> set[int]:
    """Recipients still `sent` whose provider failed the message after accepting it, for a reason that passes
    (throttling, congestion), go back to `pending` with the send pipeline's retry rule: the same backoff, and only
    while the campaign's max_attempts leave another attempt and the campaign can still send. Counters follow
    (sent -1, pending +1, the day's schedule gets the message back). Returns the ids requeued; the others are the
    caller's to record as failed."""
    if not failures:
        return set()
    reasons = {f.recipient_id: f.reason[:2000] for f in failures}
    await sending_repository.lock_recipients(session, set(reasons))
    rows, per_campaign, per_day = [], Counter[uuid.UUID](), defaultdict(int)
    for row in await repo.still_sent(session, sorted(reasons)):
        attempt = row.retry_count + 1
        if attempt >= row.max_attempts or row.campaign_status not in _CAN_RESEND:
            continue
        retry_at = now + backoff_delay(attempt, base=RETRY_BASE_SECONDS, cap=RETRY_CAP_SECONDS)
        rows.append({"rid": row.id, "reason": reasons[row.id], "retry_at": retry_at})
        per_campaign[row.campaign_id] += 1
        if row.scheduled_send_date is not None:
            per_day[(row.campaign_id, row.scheduled_send_date)] += 1
    # Locked and still `sent` (still_sent, under lock_recipients): nothing can have moved them since.
    await sending_repository.mark_retry(session, rows, now=now, unsend=True)
    for campaign_id in sorted(per_campaign):  # one lock order for every writer
        count = per_campaign[campaign_id]
        await sending_repository.add_counters(session, campaign_id, sent=-count, pending=count)
    for (campaign_id, day), count in sorted(per_day.items()):
        await sending_repository.count_schedule_progress(session, campaign_id, day, sent=-count, handled=-count)
    return {r["rid"] for r in rows}
