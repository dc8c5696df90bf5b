from __future__ import annotations

import uuid
from datetime import UTC, date, datetime, time, timedelta
from typing import Annotated

from fastapi import APIRouter, Body, Query, Response, status

from clarion.campaign import service
from clarion.campaign import tasks as _tasks  # noqa: F401 - registers the campaign ticks with the worker
from clarion.campaign.schemas import (
    ActivationResult,
    CampaignActionResult,
    CampaignCreate,
    CampaignPage,
    CampaignRead,
    CampaignStats,
    CampaignStatus,
    CampaignType,
    CampaignUpdate,
    Channel,
    EventPage,
    EventRead,
    EventType,
    RecipientPage,
    RecipientRead,
    RecipientsAdd,
    RecipientsAdded,
    RecipientStatus,
    ScheduleRequest,
)
from clarion.db import SessionDep
from clarion.errors import Invalid, field_error
from clarion.models import Campaign
from clarion.tenancy.deps import ReadAuth, WriteAuth

router = APIRouter(prefix="/campaigns", tags=["campaigns"])


def _read(campaign: Campaign) -> CampaignRead:
    return CampaignRead.model_validate(campaign).model_copy(
        update={"progress_percentage": service.percentage(campaign.sent, campaign.total_target)})


def _acted(campaign: Campaign, message: str) -> CampaignActionResult:
    return CampaignActionResult(**_read(campaign).model_dump(), campaign_id=campaign.id, message=message)


def _bound(raw: str | None, name: str, *, end_of_day: bool) -> datetime | None:
    """A plain date means that whole day in UTC; a time must carry its offset."""
    if raw is None:
        return None
    try:
        if len(raw) == 10:
            moment = datetime.combine(date.fromisoformat(raw), time.min, tzinfo=UTC)
            return moment + timedelta(days=1, microseconds=-1) if end_of_day else moment
        value = datetime.fromisoformat(raw)
    except ValueError as exc:
        raise Invalid(f"{name} must be a date (YYYY-MM-DD) or an ISO 8601 time with offset",
                      errors=[field_error(["query", name], "not a date or time")]) from exc
    if value.tzinfo is None:
        raise Invalid(f"{name} needs a timezone offset (e.g. 2025-01-31T00:00:00Z) or a plain date",
                      errors=[field_error(["query", name], "timezone offset required")])
    return value


@router.post("", response_model=CampaignActionResult, status_code=status.HTTP_201_CREATED)
async def create_campaign(data: CampaignCreate, session: SessionDep, auth: WriteAuth) -> CampaignActionResult:
    campaign = await service.create_campaign(session, auth.tenant_id, data)
    return _acted(campaign, f"Campaign '{campaign.name}' created successfully")


@router.get("", response_model=CampaignPage)
async def list_campaigns(
    session: SessionDep,
    auth: ReadAuth,
    status_: Annotated[CampaignStatus | None, Query(alias="status")] = None,
    channel: Channel | None = None,
    type_: Annotated[CampaignType | None, Query(alias="type")] = None,
    q: Annotated[str | None, Query(description="Part of the name, any case")] = None,
    created_from: Annotated[str | None, Query(description="YYYY-MM-DD or a time with offset")] = None,
    created_to: Annotated[str | None, Query(description="YYYY-MM-DD (that day included) or a time")] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    cursor: str | None = None,
) -> CampaignPage:
    page = await service.list_campaigns(
        session, auth.tenant_id, status=status_, channel=channel, type_=type_, q=q,
        created_from=_bound(created_from, "created_from", end_of_day=False),
        created_to=_bound(created_to, "created_to", end_of_day=True), limit=limit, cursor=cursor)
    return CampaignPage(items=[_read(c) for c in page.rows], next_cursor=page.next_cursor)


@router.get("/{campaign_id}", response_model=CampaignRead)
async def get_campaign(campaign_id: uuid.UUID, session: SessionDep, auth: ReadAuth) -> CampaignRead:
    return _read(await service.get_campaign(session, auth.tenant_id, campaign_id))


@router.patch("/{campaign_id}", response_model=CampaignRead)
async def update_campaign(campaign_id: uuid.UUID, data: CampaignUpdate, session: SessionDep,
                          auth: WriteAuth) -> CampaignRead:
    return _read(await service.update_campaign(session, auth.tenant_id, campaign_id, data))


@router.delete("/{campaign_id}", status_code=status.HTTP_204_NO_CONTENT)
async def delete_campaign(campaign_id: uuid.UUID, session: SessionDep, auth: WriteAuth) -> Response:
    await service.delete_campaign(session, auth.tenant_id, campaign_id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.post("/{campaign_id}/schedule", response_model=CampaignActionResult)
async def schedule_campaign(campaign_id: uuid.UUID, data: ScheduleRequest, session: SessionDep,
                            auth: WriteAuth) -> CampaignActionResult:
    campaign = await service.schedule(session, auth.tenant_id, campaign_id, data.scheduled_at)
    return _acted(campaign, service.action_message(campaign, "schedule"))


def _action_route(action: str, summary: str) -> None:
    async def run_action(campaign_id: uuid.UUID, session: SessionDep, auth: WriteAuth) -> CampaignActionResult:
        campaign = await service.transition(session, auth.tenant_id, campaign_id, action)
        return _acted(campaign, service.action_message(campaign, action))

    run_action.__name__ = f"{action}_campaign"
    router.add_api_route(f"/{{campaign_id}}/{action.replace('_', '-')}", run_action, methods=["POST"],
                         response_model=CampaignActionResult, summary=summary)


for _action, _summary in (
    ("start", "Start now (a draft or approved campaign passes through scheduled)"),
    ("pause", "Pause a running campaign"),
    ("resume", "Resume a paused campaign"),
    ("cancel", "Cancel for good; every unsent recipient becomes cancelled"),
    ("submit_for_review", "Send a draft to review (seed 003)"),
    ("approve", "Approve a campaign in review"),
    ("request_changes", "Send a campaign in review back to draft"),
):
    _action_route(_action, _summary)


@router.post("/{campaign_id}/activate", response_model=ActivationResult)
async def activate_campaign(
    campaign_id: uuid.UUID, session: SessionDep, auth: WriteAuth,
    start_date: Annotated[date | None, Query(description="First sending day (YYYY-MM-DD); default tomorrow")] = None,
) -> ActivationResult:
    result = await service.activate(session, auth.tenant_id, campaign_id, start_date)
    return ActivationResult(
        campaign_id=result.campaign.id, status=result.campaign.status, start_date=result.start_date,
        recipients_scheduled=result.recipients_scheduled, daily_limit=result.daily_limit,
        estimated_days=result.estimated_days, estimated_completion_date=result.estimated_completion_date,
        message=result.message)


@router.post("/{campaign_id}/recipients", response_model=RecipientsAdded)
async def add_recipients(
    campaign_id: uuid.UUID, session: SessionDep, auth: WriteAuth,
    data: Annotated[RecipientsAdd | None, Body()] = None,
    use_target_audience: Annotated[bool, Query(description="Add the campaign's segment or filter")] = False,
) -> RecipientsAdded:
    return await service.add_recipients(session, auth.tenant_id, campaign_id, data,
                                        use_target_audience=use_target_audience)


@router.get("/{campaign_id}/recipients", response_model=RecipientPage)
async def list_recipients(
    campaign_id: uuid.UUID, session: SessionDep, auth: ReadAuth,
    status_: Annotated[RecipientStatus | None, Query(alias="status")] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    cursor: str | None = None,
) -> RecipientPage:
    page = await service.list_recipients(session, auth.tenant_id, campaign_id, status=status_, limit=limit,
                                         cursor=cursor)
    return RecipientPage(items=[RecipientRead.model_validate(r) for r in page.rows], next_cursor=page.next_cursor)


@router.get("/{campaign_id}/events", response_model=EventPage)
async def list_events(
    campaign_id: uuid.UUID, session: SessionDep, auth: ReadAuth,
    type_: Annotated[EventType | None, Query(alias="type")] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    cursor: str | None = None,
) -> EventPage:
    """The campaign's event log, newest first."""
    page = await service.list_events(session, auth.tenant_id, campaign_id, type_=type_, limit=limit, cursor=cursor)
    return EventPage(items=[EventRead.model_validate(e) for e in page.rows], next_cursor=page.next_cursor)


@router.get("/{campaign_id}/stats", response_model=CampaignStats)
async def campaign_stats(campaign_id: uuid.UUID, session: SessionDep, auth: ReadAuth) -> CampaignStats:
    return await service.campaign_stats(session, auth.tenant_id, campaign_id)
