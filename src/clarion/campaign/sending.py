"""The campaign side of sending: outcomes, events, counters, and the campaign ticks (claims: campaign.claims).

The dispatcher (delivery) claims due recipients (campaign.claims), commits, sends, then records the outcomes here
in a second transaction. Tracking endpoints and webhooks record events. Every change to a recipient's status moves the
campaign's counters in the same transaction, so the counters always equal what the recipients say:

    total_target = every recipient          pending   = status pending or sending
    sent         = sent_at is set           delivered = delivered_at is set (implied by any human engagement)
    opened       = opened_at is set         clicked   = clicked_at is set   (first HUMAN open / click)
    converted    = converted_at is set      opened_total / clicked_total = sum of open_count / click_count
    failed, bounced, skipped = that status  (cancelled recipients have no counter of their own)

Works across tenants (workers, tracking); the tenant of each row travels with it. Flushes, never commits.
"""

from __future__ import annotations

import uuid
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from clarion.audience import service as audience
from clarion.campaign import planning, service
from clarion.campaign import send_quotas as quotas
from clarion.campaign import sending_repository as repo
from clarion.campaign.repository import PlanningRepo
from clarion.errors import NotFound
from clarion.kit.clock import utcnow
from clarion.tenancy import service as tenancy
from clarion.worker import backoff_delay

# A recipient's status only moves forward along this chain …
FORWARD_RANK = {"pending": 0, "sending": 0, "sent": 1, "delivered": 2, "opened": 3, "clicked": 4, "converted": 5}
# … and these end it.
TERMINAL = frozenset({"failed", "bounced", "skipped", "cancelled"})
# Not sent (yet): nothing a provider reports about the message applies to it.
NOT_YET_SENT = frozenset(status for status, rank in FORWARD_RANK.items() if rank == 0)
# Delivery failures a provider may report after the send; they end a message that was sent or delivered.
_LATE_FAILURES = {"bounced": "bounced", "failed": "failed"}
_TIMESTAMP_OF = {"delivered": "delivered_at", "opened": "opened_at", "clicked": "clicked_at",
                 "converted": "converted_at"}
_FIRST_COUNTER = {"delivered": "delivered", "opened": "opened", "clicked": "clicked", "converted": "converted"}

RETRY_BASE_SECONDS = 60.0
RETRY_CAP_SECONDS = 3600.0


@dataclass(frozen=True)
class SendOutcome:
    recipient_id: int
    ok: bool
    provider_message_id: str | None = None
    transient: bool = False
    error: str | None = None
    cost: int = 0
    # The channel account the message went through (None: the built-in outbox), and its provider's slug.
    channel_config_id: uuid.UUID | None = None
    provider: str | None = None
    # The provider refused because the person opted out of the channel: the recipient fails, whatever the attempt,
    # and the contact is unsubscribed from the campaign's channel (source "<provider>:opt_out").
    opted_out: bool = False
    # A transient failure's "not before": the retry waits at least this many seconds.
    retry_after: float | None = None


@dataclass(frozen=True)
class RecipientRef:
    id: int
    tenant_id: uuid.UUID
    campaign_id: uuid.UUID
    contact_id: uuid.UUID
    channel: str
    status: str
    sent_at: datetime | None
    email: str | None
    phone: str | None
    provider_message_id: str | None


@dataclass(frozen=True)
class LinkRef:
    id: int
    tenant_id: uuid.UUID
    campaign_id: uuid.UUID
    url: str


@dataclass(frozen=True)
class SendingCampaign:
    id: uuid.UUID
    tenant_id: uuid.UUID
    name: str
    channel: str
    status: str
    template_id: uuid.UUID | None
    from_email: str | None
    from_name: str | None
    reply_to: str | None
    channel_config_id: uuid.UUID | None
    track_opens: bool
    track_clicks: bool
    template_name: str | None
    language_code: str | None
    template_components: list[Any] | None
    budget: int | None = None


def is_machine(metadata: dict[str, Any] | None) -> bool:
    """Tracking flags prefetchers and scanners as {"flags": {"machine": true}}."""
    flags = (metadata or {}).get("flags") or {}
    return bool(flags.get("machine")) if isinstance(flags, dict) else False


# --- outcomes -----------------------------------------------------------------------------------------------

@dataclass
class _Tally:
    tenant_id: uuid.UUID
    sent: int = 0
    failed: int = 0
    withdrawn: int = 0
    spent: int = 0
    succeeded: bool = False
    trailing_failures: int = 0
    per_day: dict[date, list[int]] = field(default_factory=lambda: defaultdict(lambda: [0, 0]))


async def record_outcomes(session: AsyncSession, outcomes: list[SendOutcome], *, now: datetime,
                          lease_owner: str) -> None:
    """Record what the sends did. Only rows still `sending` under `lease_owner` change: a row whose lease
    expired and was claimed again belongs to its new owner, and is never marked sent twice."""
    held = {h.id: h for h in await repo.held_by(session, [o.recipient_id for o in outcomes], lease_owner)}
    if not held:
        return
    states = {h.campaign_id: (h.campaign_status, h.max_attempts) for h in held.values()}
    sent_rows: list[dict[str, Any]] = []
    retry_rows: list[dict[str, Any]] = []
    failed_rows: list[dict[str, Any]] = []
    withdrawn_rows: list[dict[str, Any]] = []
    events: list[dict[str, Any]] = []
    tallies: dict[uuid.UUID, _Tally] = {}
    opted_out: dict[tuple[uuid.UUID, uuid.UUID, str], list[uuid.UUID]] = defaultdict(list)
    for outcome in outcomes:
        row = held.pop(outcome.recipient_id, None)
        if row is None:
            continue
        status, max_attempts = states[row.campaign_id]
        tally = tallies.setdefault(row.campaign_id, _Tally(row.tenant_id))
        tally.spent += outcome.cost
        attempt = row.retry_count + 1
        if outcome.ok:
            tally.sent += 1
            tally.succeeded, tally.trailing_failures = True, 0
            sent_rows.append({"rid": row.id, "pmid": outcome.provider_message_id,
                              "ccid": outcome.channel_config_id})
            events.append(repo.event_row(row.tenant_id, row.campaign_id, row.id, row.contact_id, "sent", now,
                                 {"attempt": attempt}, outcome.provider_message_id))
            _count_day(tally, row.scheduled_send_date, sent=1)
            continue
        reason = (outcome.error or "send failed")[:2000]
        if outcome.opted_out:
            # The person's refusal, not a sending problem: final at once, and no part of a failure streak.
            tally.failed += 1
            failed_rows.append({"rid": row.id, "reason": reason})
            events.append(repo.event_row(row.tenant_id, row.campaign_id, row.id, row.contact_id, "failed", now,
                                 {"error": reason, "attempt": attempt, "transient": False, "opted_out": True}))
            _count_day(tally, row.scheduled_send_date, sent=0)
            opted_out[(row.tenant_id, row.campaign_id, outcome.provider or "provider")].append(row.contact_id)
            continue
        tally.trailing_failures += 1
        if outcome.transient and status == "cancelled":
            # The campaign was cancelled while this send was in flight: withdraw it instead of retrying.
            tally.withdrawn += 1
            withdrawn_rows.append({"rid": row.id, "reason": reason})
            _count_day(tally, row.scheduled_send_date, sent=0)
        elif outcome.transient and attempt < max_attempts:
            delay = backoff_delay(attempt, base=RETRY_BASE_SECONDS, cap=RETRY_CAP_SECONDS)
            if outcome.retry_after:
                # The provider said how long to wait: never sooner, whatever the backoff would have chosen.
                delay = max(delay, timedelta(seconds=outcome.retry_after))
            retry_at = now + delay
            retry_rows.append({"rid": row.id, "reason": reason, "retry_at": retry_at})
        else:
            tally.failed += 1
            failed_rows.append({"rid": row.id, "reason": reason})
            events.append(repo.event_row(row.tenant_id, row.campaign_id, row.id, row.contact_id, "failed", now,
                                 {"error": reason, "attempt": attempt, "transient": outcome.transient}))
            _count_day(tally, row.scheduled_send_date, sent=0)
    await repo.mark_sent(session, sent_rows, now=now)
    await repo.mark_retry(session, retry_rows, now=now)
    await repo.mark_finished(session, failed_rows, status="failed", now=now)
    await repo.mark_finished(session, withdrawn_rows, status="cancelled", now=now)
    await repo.insert_events(session, events)
    for (tenant_id, campaign_id, provider), contact_ids in opted_out.items():
        channel = (await service.get_campaign(session, tenant_id, campaign_id)).channel
        await audience.unsubscribe_contacts(session, tenant_id, contact_ids, channel, f"{provider}:opt_out")
    for campaign_id, tally in tallies.items():
        await _apply_tally(session, campaign_id, tally, status=states[campaign_id][0])


def _count_day(tally: _Tally, day: date | None, *, sent: int) -> None:
    if day is not None:
        tally.per_day[day][0] += sent
        tally.per_day[day][1] += 1


async def _apply_tally(session: AsyncSession, campaign_id: uuid.UUID, tally: _Tally, *, status: str) -> None:
    finished = tally.sent + tally.failed + tally.withdrawn
    run, spent, budget = await repo.record_streak(
        session, campaign_id, reset=tally.succeeded, failures=tally.trailing_failures, sent=tally.sent,
        failed=tally.failed, pending=-finished, spent=tally.spent)
    for day, (sent, handled) in tally.per_day.items():
        await repo.count_schedule_progress(session, campaign_id, day, sent=sent, handled=handled)
    if run >= 0 and status == "running":
        await service.transition(session, tally.tenant_id, campaign_id, "pause",
                                 reason=f"paused automatically after {run} consecutive send failures")
    # A campaign whose last message used the budget up has nothing left to stop: it completes instead.
    elif (tally.spent and status == "running" and budget is not None and spent >= budget
          and await repo.has_unsent(session, campaign_id)):
        await quotas.pause_running(session, tally.tenant_id, campaign_id, quotas.budget_reason(spent, budget))


# --- events -------------------------------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class EventInput:
    """One event to record (record_events). `counts=False` appends the event and moves nothing."""

    tenant_id: uuid.UUID
    campaign_id: uuid.UUID
    recipient_id: int | None
    type: str
    occurred_at: datetime
    metadata: dict[str, Any] | None = None
    provider_message_id: str | None = None
    counts: bool = True


@dataclass(frozen=True, slots=True)
class _Effect:
    """What one event did to its recipient: column values, campaign counter deltas, whether status moved."""

    values: dict[str, Any]
    deltas: dict[str, int]
    moved: bool


_NO_EFFECT = _Effect({}, {}, False)


def _apply(state: dict[str, Any], event: EventInput) -> _Effect:
    """The recipient state machine for one event, on `state` (the row's current values, updated in place).

    Replays and out-of-order arrivals change nothing twice: a timestamp is set once, a status never goes back,
    and the unique counters follow the timestamps. Machine (flagged) opens and clicks count in open_count /
    click_count and the *_total counters only.
    """
    status = state["status"]
    if status in TERMINAL or status in NOT_YET_SENT:
        return _NO_EFFECT  # never sent, or finished: the event is history, nothing moves
    type_, metadata, at = event.type, event.metadata, event.occurred_at
    values: dict[str, Any] = {}
    deltas: dict[str, int] = {}
    machine = type_ in ("opened", "clicked") and is_machine(metadata)
    if type_ == "opened":
        values["open_count"] = state["open_count"] + 1
        deltas["opened_total"] = 1
    elif type_ == "clicked":
        values["click_count"] = state["click_count"] + 1
        deltas["clicked_total"] = 1
    moved_to: str | None = None
    if type_ in _LATE_FAILURES and status in ("sent", "delivered"):
        moved_to = _LATE_FAILURES[type_]
        deltas[moved_to] = 1
        if moved_to == "failed":
            values["failed_at"] = at
        reason = (metadata or {}).get("reason") or (metadata or {}).get("diagnostic")
        if reason:
            values["failure_reason"] = str(reason)[:2000]
    elif type_ in _TIMESTAMP_OF and not machine:
        # Engagement proves delivery, so an open before (or without) a delivery report counts as delivered.
        for stage in ("delivered", type_):
            column = _TIMESTAMP_OF[stage]
            if state[column] is None and column not in values:
                values[column] = at
                deltas[_FIRST_COUNTER[stage]] = deltas.get(_FIRST_COUNTER[stage], 0) + 1
        if FORWARD_RANK[type_] > FORWARD_RANK[status]:
            moved_to = type_
    if moved_to is not None:
        values["status"] = moved_to
    state.update(values)
    return _Effect(values, deltas, moved_to is not None)


async def lock_event_states(session: AsyncSession, recipient_ids: set[int]) -> dict[int, dict[str, Any]]:
    """recipient id → its event state (id, tenant_id, campaign_id, contact_id, status, sent_at, the event
    timestamps and counts) for those that exist, locked until the transaction ends. A caller that must look at
    the recipients before building its events hands this to record_events(locked=…) in the same transaction,
    so they are read once."""
    return {row["id"]: row for row in await repo.lock_recipients(session, recipient_ids)}


async def record_events(session: AsyncSession, events: list[EventInput], *,
                        locked: dict[int, dict[str, Any]] | None = None) -> list[bool]:
    """Append events and move their recipients forward, with the campaigns' counters, in a constant number of
    statements per batch: one SELECT of the recipients (locked; none when `locked` comes from
    lock_event_states), one INSERT of the events, one UPDATE of the changed recipients, one UPDATE per campaign
    of its counters.

    The events apply in the order given (the order they arrived); the result is exactly that of record_event
    called for each in turn. Returns, per event, whether its recipient's status moved. NotFound (and nothing
    written) when an event names a recipient that is not its campaign's.
    """
    if not events:
        return []
    wanted = {e.recipient_id for e in events if e.recipient_id is not None}
    rows = locked if locked is not None else await lock_event_states(session, wanted)
    for e in events:
        if e.recipient_id is None:
            continue
        row = rows.get(e.recipient_id)
        if row is None or row["campaign_id"] != e.campaign_id or row["tenant_id"] != e.tenant_id:
            raise NotFound(f"recipient {e.recipient_id} of campaign {e.campaign_id} not found")
    moved: list[bool] = []
    changed: dict[int, dict[str, Any]] = {}
    deltas_of: dict[uuid.UUID, dict[str, int]] = {}
    for e in events:
        row = rows.get(e.recipient_id) if e.recipient_id is not None else None
        if row is None or not e.counts:
            moved.append(False)
            continue
        effect = _apply(row, e)
        moved.append(effect.moved)
        if effect.values:
            changed.setdefault(row["id"], {}).update(effect.values)
        if effect.deltas:
            totals = deltas_of.setdefault(e.campaign_id, {})
            for name, delta in effect.deltas.items():
                totals[name] = totals.get(name, 0) + delta
            for first in ("opened", "clicked", "converted"):
                if effect.deltas.get(first):
                    tenancy.emit(session, e.tenant_id, f"crm.campaign.recipient.{first}",
                                 {"campaign_id": str(e.campaign_id), "recipient_id": row["id"],
                                  "contact_id": str(row["contact_id"])})
    await repo.insert_events(session, [
        repo.event_row(e.tenant_id, e.campaign_id, e.recipient_id,
                       rows[e.recipient_id]["contact_id"] if e.recipient_id is not None else None,
                       e.type, e.occurred_at, e.metadata, e.provider_message_id) for e in events])
    if changed:
        await repo.update_recipients(session, [rows[rid] for rid in changed], now=utcnow(),
                                     changed={name for values in changed.values() for name in values})
    for campaign_id in sorted(deltas_of):  # one lock order for every writer
        await repo.add_counters(session, campaign_id, **deltas_of[campaign_id])
    return moved


async def record_event(session: AsyncSession, *, tenant_id: uuid.UUID, campaign_id: uuid.UUID,
                       recipient_id: int | None, type: str, occurred_at: datetime,
                       metadata: dict[str, Any] | None = None, provider_message_id: str | None = None,
                       counts: bool = True) -> bool:
    """Append one event; record_events of one. Returns whether the recipient's status moved. NotFound when the
    recipient is not the campaign's."""
    [moved] = await record_events(session, [EventInput(tenant_id, campaign_id, recipient_id, type, occurred_at,
                                                       metadata, provider_message_id, counts)])
    return moved


def _ref(row: tuple[Any, ...] | None) -> RecipientRef | None:
    return RecipientRef(*row) if row is not None else None


async def get_recipient_ref(session: AsyncSession, recipient_id: int) -> RecipientRef | None:
    return _ref(await repo.recipient_ref(session, recipient_id=recipient_id))


async def get_recipient_refs(session: AsyncSession, recipient_ids: set[int]) -> dict[int, RecipientRef]:
    """recipient id → ref for those that exist, in one query."""
    if not recipient_ids:
        return {}
    return {row[0]: RecipientRef(*row) for row in await repo.recipient_refs(session, recipient_ids)}


async def find_recipient_by_provider_message_id(session: AsyncSession,
                                                provider_message_id: str) -> RecipientRef | None:
    return _ref(await repo.recipient_ref(session, provider_message_id=provider_message_id))


# --- links and money ----------------------------------------------------------------------------------------

async def register_links(session: AsyncSession, *, tenant_id: uuid.UUID, campaign_id: uuid.UUID,
                         urls: list[str]) -> dict[str, int]:
    """url → link id for the campaign, creating the missing ones (one upsert, one select)."""
    distinct = list(dict.fromkeys(urls))
    if not distinct:
        return {}
    return await repo.upsert_links(session, tenant_id=tenant_id, campaign_id=campaign_id, urls=distinct)


async def get_link(session: AsyncSession, link_id: int) -> LinkRef | None:
    row = await repo.link(session, link_id)
    return LinkRef(*row) if row is not None else None


async def add_revenue(session: AsyncSession, *, tenant_id: uuid.UUID, campaign_id: uuid.UUID,
                      recipient_id: int | None, amount: int) -> None:
    """campaign.revenue += amount (minor units of the campaign's currency), in SQL. The recipient is named for
    the record; the conversion event itself is record_event's."""
    if not await repo.add_revenue(session, tenant_id=tenant_id, campaign_id=campaign_id, amount=amount):
        raise NotFound(f"campaign {campaign_id} not found")


# --- campaign ticks -----------------------------------------------------------------------------------------

async def start_due_campaigns(session: AsyncSession, *, now: datetime,
                              tenant_id: uuid.UUID | None = None) -> list[uuid.UUID]:
    """Scheduled campaigns whose time has come start running, planned first if they were not yet.
    `tenant_id` limits it to one tenant (process-daily); the worker's tick passes none."""
    started: list[uuid.UUID] = []
    today = now.date()
    due = await repo.due_scheduled_campaigns(session, now=now, today=today, tenant_id=tenant_id)
    for campaign_id, owner in due:
        campaign = await service.get_campaign(session, owner, campaign_id, for_update=True)
        if campaign.status != "scheduled":
            continue  # another worker got there first (SQLite has no SKIP LOCKED)
        if await PlanningRepo(session, owner).count_pending(campaign_id, unplanned_only=True):
            await planning.lay_out(session, campaign, start_date=max(campaign.start_date or today, today))
        await service.transition(session, owner, campaign_id, "start")
        started.append(campaign_id)
    return started


async def complete_finished_campaigns(session: AsyncSession, *, now: datetime,
                                      tenant_id: uuid.UUID | None = None) -> list[uuid.UUID]:
    """Running campaigns with no recipient pending or sending are completed (completed_at, event)."""
    completed: list[uuid.UUID] = []
    for campaign_id, owner in await repo.finished_running_campaigns(session, tenant_id=tenant_id):
        campaign = await service.get_campaign(session, owner, campaign_id, for_update=True)
        if campaign.status != "running" or await repo.has_unsent(session, campaign_id):
            continue
        await service.transition(session, owner, campaign_id, "complete")
        completed.append(campaign_id)
    return completed


async def campaign_for_sending(session: AsyncSession, campaign_id: uuid.UUID) -> SendingCampaign:
    """The campaign as the dispatcher needs it (unscoped, by id). NotFound when it is gone."""
    c = await repo.sending_campaign(session, campaign_id)
    if c is None:
        raise NotFound(f"campaign {campaign_id} not found")
    return SendingCampaign(
        id=c.id, tenant_id=c.tenant_id, name=c.name, channel=c.channel, status=c.status, template_id=c.template_id,
        from_email=c.from_email, from_name=c.from_name, reply_to=c.reply_to, channel_config_id=c.channel_config_id,
        track_opens=c.track_opens, track_clicks=c.track_clicks, template_name=c.template_name,
        language_code=c.language_code, template_components=c.template_components, budget=c.budget)
