"""Campaigns: creation and edits, the lifecycle actions, recipients and stats. Flushes, never commits."""

from __future__ import annotations

import math
import uuid
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from clarion.audience import normalize
from clarion.audience import service as audience
from clarion.audience.segments import service as segments
from clarion.campaign import lifecycle, planning
from clarion.campaign.repository import CampaignRepo, EventRepo, PlanningRepo, RecipientRepo, only_contacts
from clarion.campaign.schemas import (
    CampaignCreate,
    CampaignStats,
    CampaignUpdate,
    RecipientsAdd,
    RecipientsAdded,
)
from clarion.content import service as content
from clarion.errors import Conflict, Invalid, NotFound, field_error
from clarion.kit.clock import clock, utcnow
from clarion.kit.pagination import PageRows
from clarion.models import Campaign, CampaignEvent, CampaignRecipient
from clarion.tenancy import service as tenancy

AUDIENCE_FIELDS = ("segment_id", "filter", "target_audience")
# Fields a PATCH may not set to null.
REQUIRED_FIELDS = ("name", "type", "channel", "priority", "currency", "local_time", "track_opens", "track_clicks",
                   "max_send_errors", "max_attempts")
# A finished campaign is a record: only its name and description may still be edited.
EDITABLE_WHEN_FINAL = frozenset({"name", "description"})
# scheduled_at means something only until the campaign starts.
SCHEDULABLE_STATES = frozenset({"draft", "ai_generating", "pending_review", "approved", "scheduled"})

# Fields whose change re-plans a campaign that is scheduled or sending.
PLAN_FIELDS = frozenset({"daily_send_limit", "send_window", "local_time"})

# Human messages for action responses (seed 002: "Campaign 'Summer Sale 2025' paused").
_ACTION_MESSAGES = {
    "schedule": "scheduled", "start": "started", "pause": "paused", "resume": "resumed", "cancel": "cancelled",
    "complete": "completed", "fail": "failed", "submit_for_review": "submitted for review",
    "begin_ai_generation": "is being generated", "approve": "approved", "request_changes": "sent back to draft",
}


def _invalid(field: str, message: str) -> Invalid:
    return Invalid(f"{field}: {message}", errors=[field_error(["body", field], message)])


def action_message(campaign: Campaign, action: str) -> str:
    return f"Campaign '{campaign.name}' {_ACTION_MESSAGES[action]}"


def _payload(campaign: Campaign, **extra: Any) -> dict[str, Any]:
    return {"campaign_id": str(campaign.id), "name": campaign.name, "status": campaign.status, **extra}


# --- validation of the parts a campaign refers to ---------------------------------------------------------

async def _check_template(session: AsyncSession, tenant_id: uuid.UUID, template_id: uuid.UUID,
                          channel: str | None) -> str:
    """The template's channel; 422 when it is not this tenant's or serves another channel."""
    try:
        template = await content.get_template(session, tenant_id, template_id)
    except NotFound as exc:
        raise _invalid("template_id", f"no template {template_id} in this account") from exc
    if channel is not None and template.channel != channel:
        raise _invalid("template_id", f"template {template_id} is for {template.channel}, "
                                      f"but the campaign's channel is {channel}")
    return str(template.channel)


async def _resolved_audience(session: AsyncSession, tenant_id: uuid.UUID, data: CampaignCreate | CampaignUpdate,
                             ) -> dict[str, Any]:
    """The audience columns to store: a checked segment, a validated filter, or target_audience plus its filter."""
    given = [f for f in AUDIENCE_FIELDS if getattr(data, f) is not None]
    if len(given) > 1:
        raise Invalid(f"give at most one of segment_id, filter, target_audience (got {', '.join(given)})",
                      errors=[field_error(["body", f], "only one audience may be given") for f in given[1:]])
    audience_columns: dict[str, Any] = dict.fromkeys(AUDIENCE_FIELDS)
    if data.segment_id is not None:
        try:
            await segments.get_segment(session, tenant_id, data.segment_id)
        except NotFound as exc:
            raise _invalid("segment_id", f"no segment {data.segment_id} in this account") from exc
        audience_columns["segment_id"] = data.segment_id
    elif data.filter is not None:
        audience_columns["filter"] = segments.validate_filter(data.filter, path="filter")
    elif data.target_audience is not None:
        audience_columns["filter"] = segments.target_audience_to_filter(data.target_audience)
        audience_columns["target_audience"] = data.target_audience
    return audience_columns


def _check_schedule_time(at: datetime, field: str = "scheduled_at") -> datetime:
    if at <= utcnow():
        raise _invalid(field, f"{at.isoformat()} is in the past; give a future time")
    return at.astimezone(UTC)


def _check_whatsapp_fields(campaign: Campaign) -> None:
    if campaign.template_name and campaign.channel != "whatsapp":
        raise _invalid("template_name", f"template_name names a WhatsApp template, but the campaign's channel is "
                                        f"{campaign.channel}")


# --- CRUD ------------------------------------------------------------------------------------------------

async def create_campaign(session: AsyncSession, tenant_id: uuid.UUID, data: CampaignCreate) -> Campaign:
    channel = data.channel
    if data.template_id is not None:
        channel = await _check_template(session, tenant_id, data.template_id, channel)
    if channel is None:
        if not data.template_name:
            raise _invalid("channel", "channel is required (email, sms, whatsapp, telegram or push) unless a "
                                      "template_id or a WhatsApp template_name is given")
        channel = "whatsapp"  # seed 002: a campaign named after a WhatsApp template is a WhatsApp campaign
    fields = data.model_dump(exclude={*AUDIENCE_FIELDS, "channel"})
    if data.scheduled_at is not None:
        fields["scheduled_at"] = _check_schedule_time(data.scheduled_at)
    fields |= await _resolved_audience(session, tenant_id, data)
    campaign = Campaign(channel=channel, **fields)
    _check_whatsapp_fields(campaign)
    CampaignRepo(session, tenant_id).add(campaign)
    await session.flush()
    tenancy.emit(session, tenant_id, "crm.campaign.created", _payload(campaign, channel=channel))
    return campaign


async def get_campaign(session: AsyncSession, tenant_id: uuid.UUID, campaign_id: uuid.UUID,
                       *, for_update: bool = False) -> Campaign:
    return await CampaignRepo(session, tenant_id).get(campaign_id, for_update=for_update)


async def list_campaigns(session: AsyncSession, tenant_id: uuid.UUID, *, status: str | None = None,
                         channel: str | None = None, type_: str | None = None, q: str | None = None,
                         created_from: datetime | None = None, created_to: datetime | None = None,
                         limit: int = 50, cursor: str | None = None) -> PageRows[Campaign]:
    if created_from is not None and created_to is not None and created_from > created_to:
        raise Invalid("created_from is after created_to",
                      errors=[field_error(["query", "created_from"], "must not be after created_to")])
    return await CampaignRepo(session, tenant_id).list_page(
        status=status, channel=channel, type_=type_, q=q, created_from=created_from, created_to=created_to,
        limit=limit, cursor=cursor)


async def update_campaign(session: AsyncSession, tenant_id: uuid.UUID, campaign_id: uuid.UUID,
                          data: CampaignUpdate) -> Campaign:
    campaign = await get_campaign(session, tenant_id, campaign_id, for_update=True)
    changes = data.model_dump(exclude_unset=True)
    for field in REQUIRED_FIELDS:
        if field in changes and changes[field] is None:
            raise _invalid(field, f"{field} cannot be null")
    if campaign.status in lifecycle.FINAL and set(changes) - EDITABLE_WHEN_FINAL:
        blocked = ", ".join(sorted(set(changes) - EDITABLE_WHEN_FINAL))
        raise Conflict(f"campaign is {campaign.status}: only name and description can change (not {blocked})")
    touches_audience = any(f in changes for f in AUDIENCE_FIELDS)
    changes_channel = "channel" in changes and changes["channel"] != campaign.channel
    if (touches_audience or changes_channel) and campaign.status != "draft":
        what = "audience" if touches_audience else "channel"
        raise Conflict(f"only a draft campaign can have its {what} changed; this one is {campaign.status}")
    if "scheduled_at" in changes and campaign.status not in SCHEDULABLE_STATES:
        raise Conflict(f"scheduled_at cannot change once a campaign is {campaign.status}")
    if changes.get("scheduled_at") is not None:
        changes["scheduled_at"] = _check_schedule_time(changes["scheduled_at"])

    channel = changes.get("channel", campaign.channel)
    template_id = changes.get("template_id", campaign.template_id)
    if template_id is not None and ("template_id" in changes or changes_channel):
        await _check_template(session, tenant_id, template_id, channel)
    if touches_audience:
        changes |= await _resolved_audience(session, tenant_id, data)
    for field, value in changes.items():
        setattr(campaign, field, value)
    _check_whatsapp_fields(campaign)
    await session.flush()
    if set(changes) & PLAN_FIELDS:
        await _replan(session, campaign)
    tenancy.emit(session, tenant_id, "crm.campaign.updated", _payload(campaign, fields=sorted(changes)))
    return campaign


async def delete_campaign(session: AsyncSession, tenant_id: uuid.UUID, campaign_id: uuid.UUID) -> None:
    repo = CampaignRepo(session, tenant_id)
    campaign = await repo.get(campaign_id, for_update=True)
    if campaign.status != "draft":
        hint = "" if campaign.status in lifecycle.FINAL else " (cancel it instead)"
        raise Conflict(f"only a draft campaign can be deleted; this one is {campaign.status}{hint}")
    payload = _payload(campaign)
    await repo.remove(campaign)
    await session.flush()
    tenancy.emit(session, tenant_id, "crm.campaign.deleted", payload)


# --- lifecycle actions -----------------------------------------------------------------------------------

def _move(session: AsyncSession, tenant_id: uuid.UUID, campaign: Campaign, action: str,
          *, reason: str | None = None) -> None:
    for step in lifecycle.apply(campaign, action, at=utcnow(), reason=reason):
        tenancy.emit(session, tenant_id, step.event, _payload(campaign, previous_status=step.source,
                                                              status=step.target))


async def transition(session: AsyncSession, tenant_id: uuid.UUID, campaign_id: uuid.UUID, action: str,
                     *, reason: str | None = None) -> Campaign:
    """Run a lifecycle action by name (see lifecycle.ACTIONS); 409 when the campaign's state refuses it."""
    campaign = await get_campaign(session, tenant_id, campaign_id, for_update=True)
    lifecycle.route(campaign.status, action)  # refuse before touching anything
    if action == "cancel":
        return await _cancel(session, tenant_id, campaign)
    if action == "start" and campaign.start_date is None:
        campaign.start_date = clock.today()
    _move(session, tenant_id, campaign, action, reason=reason)
    await session.flush()
    if action in ("start", "resume"):
        # Started: sends from today. Resumed: what is left continues from today under the same daily limit.
        await planning.replan_remaining(session, campaign)
    return campaign


async def _replan(session: AsyncSession, campaign: Campaign) -> None:
    """Lay the pending recipients out again after the plan's inputs changed (nothing to do for a draft)."""
    if campaign.status == "scheduled":
        await planning.lay_out(session, campaign, start_date=campaign.start_date or clock.today())
    elif campaign.status in ("running", "paused"):
        await planning.replan_remaining(session, campaign)


async def schedule(session: AsyncSession, tenant_id: uuid.UUID, campaign_id: uuid.UUID,
                   scheduled_at: datetime) -> Campaign:
    campaign = await get_campaign(session, tenant_id, campaign_id, for_update=True)
    lifecycle.route(campaign.status, "schedule")  # refuse before touching anything
    campaign.scheduled_at = _check_schedule_time(scheduled_at)
    campaign.start_date = campaign.scheduled_at.date()
    _move(session, tenant_id, campaign, "schedule")
    await session.flush()
    return campaign


async def start(session: AsyncSession, tenant_id: uuid.UUID, campaign_id: uuid.UUID) -> Campaign:
    return await transition(session, tenant_id, campaign_id, "start")


async def pause(session: AsyncSession, tenant_id: uuid.UUID, campaign_id: uuid.UUID) -> Campaign:
    return await transition(session, tenant_id, campaign_id, "pause")


async def resume(session: AsyncSession, tenant_id: uuid.UUID, campaign_id: uuid.UUID) -> Campaign:
    return await transition(session, tenant_id, campaign_id, "resume")


async def complete(session: AsyncSession, tenant_id: uuid.UUID, campaign_id: uuid.UUID) -> Campaign:
    """For the dispatcher (next issue) once no recipient is left to send."""
    return await transition(session, tenant_id, campaign_id, "complete")


async def fail(session: AsyncSession, tenant_id: uuid.UUID, campaign_id: uuid.UUID, reason: str) -> Campaign:
    return await transition(session, tenant_id, campaign_id, "fail", reason=reason)


async def cancel(session: AsyncSession, tenant_id: uuid.UUID, campaign_id: uuid.UUID) -> Campaign:
    return await transition(session, tenant_id, campaign_id, "cancel")


async def _cancel(session: AsyncSession, tenant_id: uuid.UUID, campaign: Campaign) -> Campaign:
    lifecycle.route(campaign.status, "cancel")
    withdrawn = await RecipientRepo(session, tenant_id).cancel_unsent(campaign.id, at=utcnow())
    await CampaignRepo(session, tenant_id).add_to_counters(campaign, pending=-withdrawn)
    await PlanningRepo(session, tenant_id).cancel_schedule(campaign.id, at=utcnow())
    _move(session, tenant_id, campaign, "cancel")
    await session.flush()
    return campaign


def estimate_completion(start_date: date, recipients: int, daily_limit: int | None) -> tuple[int, date]:
    """(days, last day) to send `recipients` at `daily_limit` a day from `start_date`; one day without a limit."""
    days = max(1, math.ceil(recipients / daily_limit)) if daily_limit else 1
    return days, start_date + timedelta(days=days - 1)


async def activate(session: AsyncSession, tenant_id: uuid.UUID, campaign_id: uuid.UUID,
                   start_date: date | None = None) -> planning.Activation:
    """Seed 002's activate: start today (running) or on a later date (scheduled), laying the recipients out
    over days under the daily limit (campaign.planning)."""
    campaign = await get_campaign(session, tenant_id, campaign_id, for_update=True)
    today = clock.today()
    start_on = start_date or today + timedelta(days=1)
    action = "activate_today" if start_on == today else "activate"
    lifecycle.route(campaign.status, action)
    if start_on < today:
        raise Invalid(f"start_date {start_on} is in the past; today is {today}",
                      errors=[field_error(["query", "start_date"], "must be today or later")])
    if campaign.pending == 0:
        raise Invalid("the campaign has no recipients to send to; add recipients first",
                      errors=[field_error(["path", "campaign_id"], "campaign has no pending recipients")])
    campaign.start_date = start_on
    if start_on > today:
        campaign.scheduled_at = datetime.combine(start_on, time.min, tzinfo=UTC)
    _move(session, tenant_id, campaign, action)
    await session.flush()
    return await planning.lay_out(session, campaign, start_date=start_on)


# --- recipients ------------------------------------------------------------------------------------------

def _distinct(values: list[Any]) -> list[Any]:
    return list(dict.fromkeys(values))


async def _explicit_contacts(session: AsyncSession, tenant_id: uuid.UUID, data: RecipientsAdd,
                             base: Any) -> tuple[list[uuid.UUID], list[str]]:
    """(contact ids found in this tenant, given values that match no contact). Nothing is created."""
    if data.contact_ids is not None:
        wanted = _distinct(data.contact_ids)
        found = await RecipientRepo(session, tenant_id).ids_in_audience(base, wanted)
        return [i for i in wanted if i in found], [str(i) for i in wanted if i not in found]
    if data.emails is not None:
        given, lookup, normalise = _distinct(data.emails), audience.contact_ids_by_email, normalize.normalize_email
    else:
        region = (await tenancy.get_tenant(session, tenant_id)).default_region
        given, lookup = _distinct(data.phone_numbers or []), audience.contact_ids_by_phone

        def normalise(raw: str) -> str:
            return normalize.normalize_phone(raw, region)
    normalised: dict[str, str] = {}
    for raw in given:
        try:
            normalised[raw] = normalise(raw)
        except ValueError:
            continue  # an address that cannot exist matches no contact: reported as unknown below
    ids_by_address = await lookup(session, tenant_id, _distinct(list(normalised.values())))
    unknown = [raw for raw in given if ids_by_address.get(normalised.get(raw, "")) is None]
    return _distinct(ids_by_address.values()), unknown


async def add_recipients(session: AsyncSession, tenant_id: uuid.UUID, campaign_id: uuid.UUID,
                         data: RecipientsAdd | None = None, *, use_target_audience: bool = False) -> RecipientsAdded:
    """Snapshot contacts into the campaign with one INSERT … SELECT; unsubscribed and duplicate ones are counted."""
    given = data.given() if data is not None else []
    if use_target_audience == bool(given) or len(given) > 1:
        message = ("give exactly one of contact_ids, emails, phone_numbers, or use_target_audience=true "
                   "with no body")
        raise Invalid(message, errors=[field_error(["body"], message)])
    campaign = await get_campaign(session, tenant_id, campaign_id, for_update=True)
    if campaign.status in lifecycle.FINAL:
        raise Conflict(f"cannot add recipients to a campaign that is {campaign.status}: "
                       f"{campaign.status} is final")
    recipients = RecipientRepo(session, tenant_id)
    unknown: list[str] = []
    if use_target_audience:
        if campaign.segment_id is None and campaign.filter is None:
            raise Invalid("the campaign has no target audience (segment_id, filter or target_audience) to use",
                          errors=[field_error(["query", "use_target_audience"],
                                              "campaign has no segment_id, filter or target_audience")])
        chosen = await segments.audience_select(session, tenant_id, segment_id=campaign.segment_id,
                                                filter=campaign.filter)
        matched = await recipients.count_audience(chosen)
    else:
        assert data is not None
        base = await segments.audience_select(session, tenant_id)
        contact_ids, unknown = await _explicit_contacts(session, tenant_id, data, base)
        chosen = only_contacts(base, contact_ids)
        matched = len(contact_ids)
    # A campaign without recipients cannot hold duplicates: skip that count (it matters at a million rows).
    duplicates = await recipients.count_already_in(campaign.id, chosen) if campaign.total_target else 0
    added = 0
    if matched:
        added = await recipients.insert_from_audience(
            campaign.id, chosen, only_if=audience.subscribed_on(campaign.channel), at=utcnow())
    await CampaignRepo(session, tenant_id).add_to_counters(campaign, total_target=added, pending=added)
    if added:
        tenancy.emit(session, tenant_id, "crm.campaign.recipients_added", _payload(campaign, added=added))
        await _replan(session, campaign)  # late additions to a planned campaign get their slots too
    return RecipientsAdded(
        campaign_id=campaign.id, recipients_added=added, skipped_duplicates=duplicates,
        skipped_unsubscribed=max(0, matched - duplicates - added), total_recipients=campaign.total_target,
        unknown=unknown, message=f"Added {added} recipients to campaign")


async def list_events(session: AsyncSession, tenant_id: uuid.UUID, campaign_id: uuid.UUID, *,
                      type_: str | None = None, limit: int = 50, cursor: str | None = None) -> PageRows[CampaignEvent]:
    await get_campaign(session, tenant_id, campaign_id)
    return await EventRepo(session, tenant_id).list_page(campaign_id, type_=type_, limit=limit, cursor=cursor)


async def list_recipients(session: AsyncSession, tenant_id: uuid.UUID, campaign_id: uuid.UUID, *,
                          status: str | None = None, limit: int = 50,
                          cursor: str | None = None) -> PageRows[CampaignRecipient]:
    await get_campaign(session, tenant_id, campaign_id)
    return await RecipientRepo(session, tenant_id).list_page(campaign_id, status=status, limit=limit, cursor=cursor)


# --- stats -----------------------------------------------------------------------------------------------

def percentage(part: int, whole: int) -> float:
    return round(part / whole * 100, 1) if whole else 0.0


async def campaign_stats(session: AsyncSession, tenant_id: uuid.UUID, campaign_id: uuid.UUID) -> CampaignStats:
    """Read from the campaign's counters only: constant cost whatever the number of recipients."""
    c = await get_campaign(session, tenant_id, campaign_id)
    completion = None
    if c.status == "completed" and c.completed_at is not None:
        completion = c.completed_at.date()
    elif c.status not in lifecycle.FINAL and c.start_date is not None and c.total_target:
        completion = estimate_completion(c.start_date, c.total_target, c.daily_send_limit)[1]
    return CampaignStats(
        campaign_id=c.id, campaign_name=c.name, status=c.status, total_target=c.total_target, sent=c.sent,
        delivered=c.delivered, read=c.opened, failed=c.failed, pending=c.pending,
        progress_percentage=percentage(c.sent, c.total_target), delivery_rate=percentage(c.delivered, c.sent),
        read_rate=percentage(c.opened, c.sent), estimated_completion_date=completion, opened=c.opened,
        opened_total=c.opened_total, open_rate=percentage(c.opened, c.sent), clicked_total=c.clicked_total,
        click_rate=percentage(c.clicked, c.sent), clicked=c.clicked, converted=c.converted, bounced=c.bounced, skipped=c.skipped, revenue=c.revenue,
        spent=c.spent, budget=c.budget, currency=c.currency)
