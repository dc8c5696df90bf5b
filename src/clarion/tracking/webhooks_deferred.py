"""Delivery statuses that arrive before their send is recorded are kept, durably, and applied once it is.

A fast provider reports `delivered` (or `read`, `failed`) while the worker that sent the message has not yet
recorded the outcome: the recipient is still `sending`, or no recipient carries the message id yet. Such statuses
(tracking.webhooks_apply.apply_statuses(hold=True) hands them back) become a job on the worker's queue, in the
transaction that logs the call, so they are never lost: the job applies them again a few seconds later, and defers
what is still not applicable with a growing delay, up to MAX_WAIT after the call. Past that they are applied as
they are (an unknown message id is logged as unknown; a recipient never sent keeps the status as history).

Re-applying is safe: the recipient state machine (campaign.sending.record_events) moves forward only and counts
once, so a deferred `delivered` applied after a later `read` changes nothing twice.
"""

from __future__ import annotations

import dataclasses
import logging
import uuid
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from clarion.delivery.channels.base import StatusUpdate
from clarion.kit.clock import utcnow
from clarion.tracking import webhooks_apply
from clarion.tracking.webhooks_apply import AccountFacts
from clarion.tracking.webhooks_repository import WebhookCallRepo
from clarion.worker import backoff_delay, enqueue, job

logger = logging.getLogger("clarion.tracking.webhooks")

JOB = "tracking.apply_deferred_statuses"
# The send is usually recorded within a second or two of the provider's answer; a lease-expired send (a crashed
# worker) is sent again within minutes. After this long a status's message is not coming.
MAX_WAIT = timedelta(minutes=15)
FIRST_DELAY_SECONDS = 5.0
DELAY_CAP_SECONDS = 120.0
# The fields kept in the job (the raw provider item stays in the call log, not here).
_FIELDS = tuple(f.name for f in dataclasses.fields(StatusUpdate) if f.name != "raw")


async def apply_statuses(session: AsyncSession, account: AccountFacts, statuses: list[StatusUpdate], *,
                         call_id: int) -> dict[str, Any]:
    """What a webhook call reports: applied now where the send is recorded, deferred (a job) where it is not yet.
    The summary says how many were deferred."""
    applied = await webhooks_apply.apply_statuses(session, account, statuses, hold=True)
    await _defer(session, account, applied.waiting, call_id=call_id, since=utcnow(), round_=1)
    return applied.summary


async def _defer(session: AsyncSession, account: AccountFacts, waiting: list[StatusUpdate], *, call_id: int,
                 since: datetime, round_: int) -> None:
    if not waiting:
        return
    deadline = since + MAX_WAIT
    run_at = min(utcnow() + backoff_delay(round_, base=FIRST_DELAY_SECONDS, cap=DELAY_CAP_SECONDS), deadline)
    await enqueue(session, JOB, {
        "tenant_id": account.tenant_id, "channel_config_id": account.channel_config_id,
        "provider": account.provider, "channel": account.channel, "call_id": call_id, "since": since,
        "round": round_, "updates": [{name: getattr(u, name) for name in _FIELDS} for u in waiting],
    }, run_at=run_at, tenant_id=account.tenant_id)


def _update_of(stored: dict[str, Any]) -> StatusUpdate:
    return StatusUpdate(**{**stored, "occurred_at": datetime.fromisoformat(stored["occurred_at"])})


@job(JOB)
async def apply_deferred_statuses(session: AsyncSession, args: dict[str, Any]) -> None:
    """One round: apply what the send's record now allows, defer the rest again (held until MAX_WAIT after the
    call, then applied as it is), and add the round's outcome to the call's log entry."""
    tenant_id = uuid.UUID(args["tenant_id"])
    account = AccountFacts(tenant_id=tenant_id,
                           channel_config_id=uuid.UUID(args["channel_config_id"]) if args["channel_config_id"]
                           else None,
                           provider=args["provider"], channel=args["channel"], config=None)
    since = datetime.fromisoformat(args["since"])
    applied = await webhooks_apply.apply_statuses(session, account, [_update_of(u) for u in args["updates"]],
                                                  hold=utcnow() < since + MAX_WAIT)
    await _defer(session, account, applied.waiting, call_id=args["call_id"], since=since, round_=args["round"] + 1)
    await _log_round(session, tenant_id, args["call_id"], applied.summary)


async def _log_round(session: AsyncSession, tenant_id: uuid.UUID, call_id: int, summary: dict[str, Any]) -> None:
    """The call's outcome gains "later": the counts of its deferred statuses' rounds, summed ("deferred": how many
    still wait), and the message ids that stayed unknown."""
    calls = WebhookCallRepo(session, tenant_id)
    call = await calls.find(call_id)
    if call is None:
        return  # purged past its retention: the job's own row still tells
    outcome = dict(call.outcome or {})
    later = dict(outcome.get("later") or {})
    for name, value in summary.items():
        if name == "unknown_message_ids":
            later[name] = (later.get(name, []) + value)[:webhooks_apply.UNKNOWN_IDS_KEPT]
        elif name not in ("statuses", "deferred"):  # a status still waiting is looked at again each round
            later[name] = later.get(name, 0) + value
    later["deferred"] = summary["deferred"]
    later["rounds"] = later.get("rounds", 0) + 1
    outcome["later"] = later
    await calls.set_outcome(call_id, outcome)
