"""Send planning (seed 002): spread a campaign's pending recipients over days under its daily limit.

Each pending recipient gets a `scheduled_send_date` and a `send_after` (the UTC instant its day's send window
opens; in the contact's own timezone when the campaign sends in local time), and each day gets one
`campaign_send_schedule` row. Recipients are laid out in id order with one ROW_NUMBER() UPDATE; only the
list of days (and, for local time, of date × timezone pairs) is computed in Python.

Flushes, never commits.
"""

from __future__ import annotations

import math
import uuid
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta, tzinfo
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from sqlalchemy.ext.asyncio import AsyncSession

from clarion.campaign.repository import CampaignRepo, PlanningRepo
from clarion.errors import Invalid, field_error
from clarion.kit.clock import clock, utcnow
from clarion.models import Campaign

# A plan longer than this is a mistake (a daily limit of 1 for a million contacts), not a plan.
MAX_PLAN_DAYS = 3660


@dataclass(frozen=True)
class SendWindow:
    """Hours [start_hour, end_hour) on the given weekdays (Monday = 0); the default is always open."""

    start_hour: int = 0
    end_hour: int = 24
    weekdays: frozenset[int] = field(default_factory=lambda: frozenset(range(7)))

    @classmethod
    def of(cls, campaign: Any) -> SendWindow:
        raw = campaign.send_window
        if not raw:
            return cls()
        return cls(int(raw.get("start_hour", 0)), int(raw.get("end_hour", 24)),
                   frozenset(raw.get("weekdays") or range(7)))

    def allows(self, day: date) -> bool:
        return day.weekday() in self.weekdays

    def opens_at(self, day: date, zone: tzinfo = UTC) -> datetime:
        return datetime.combine(day, time(self.start_hour), tzinfo=zone).astimezone(UTC)

    def closes_at(self, day: date, zone: tzinfo = UTC) -> datetime:
        if self.end_hour >= 24:
            return datetime.combine(day + timedelta(days=1), time.min, tzinfo=zone).astimezone(UTC)
        return datetime.combine(day, time(self.end_hour), tzinfo=zone).astimezone(UTC)

    def is_open(self, now: datetime) -> bool:
        """Whether `now` (UTC) falls inside the window, read in UTC."""
        now = now.astimezone(UTC)
        return self.allows(now.date()) and self.start_hour <= now.hour < self.end_hour


@dataclass(frozen=True)
class Activation:
    campaign: Campaign
    start_date: date
    recipients_scheduled: int
    daily_limit: int | None
    estimated_days: int
    estimated_completion_date: date
    message: str


def sending_days(window: SendWindow, first: date, count: int) -> list[date]:
    """The first `count` days from `first` on which the window opens."""
    days: list[date] = []
    day = first
    while len(days) < count:
        if window.allows(day):
            days.append(day)
        day += timedelta(days=1)
    return days


def _zone(name: str) -> tzinfo:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        return UTC  # timezones are validated on input; an unknown one read back falls back like a missing one


def _too_long(days: int) -> Invalid:
    message = (f"the plan would take {days} days (more than {MAX_PLAN_DAYS}); raise daily_send_limit or "
               "widen the send window")
    return Invalid(message, errors=[field_error(["body", "daily_send_limit"], message)])


async def plan(session: AsyncSession, tenant_id: uuid.UUID, campaign_id: uuid.UUID, *,
               start_date: date) -> Activation:
    """Lay out every pending recipient of the campaign from `start_date` on; replaces any earlier layout."""
    campaign = await CampaignRepo(session, tenant_id).get(campaign_id, for_update=True)
    return await lay_out(session, campaign, start_date=start_date)


async def replan_remaining(session: AsyncSession, campaign: Campaign) -> Activation:
    """After a pause, or for recipients added late: lay out what is still pending from today, counting what
    today already sent against today's limit."""
    return await lay_out(session, campaign, start_date=clock.today())


async def lay_out(session: AsyncSession, campaign: Campaign, *, start_date: date) -> Activation:
    now, today = utcnow(), clock.today()
    start_date = max(start_date, today)
    repo = PlanningRepo(session, campaign.tenant_id)
    window = SendWindow.of(campaign)
    limit = campaign.daily_send_limit
    pending = await repo.count_pending(campaign.id)

    first = start_date
    # Today's UTC window has already closed: a campaign that does not send in local time begins tomorrow.
    if first == today and not campaign.local_time and now >= window.closes_at(today):
        first += timedelta(days=1)
    # Claims already made today count against today's limit (a resume must not send a second day's worth).
    used = campaign.daily_sent_count if (campaign.daily_sent_date == first and first == today) else 0
    if pending == 0:
        day_count = 0
    elif limit:
        day_count = math.ceil((pending + used) / limit)
    else:
        day_count = 1
    if day_count > MAX_PLAN_DAYS:
        raise _too_long(day_count)
    days = sending_days(window, first, day_count)

    planned_per_day: list[tuple[date, int]] = []
    left = pending
    for index, day in enumerate(days):
        room = (limit - used if index == 0 else limit) if limit else left
        planned_per_day.append((day, min(room, left)))
        left -= min(room, left)
    await repo.replace_schedule(campaign.id, from_date=start_date, days=planned_per_day, at=now)
    if days:
        await repo.assign_days(campaign.id, offset=used if limit else 0, per_day=limit,
                               days=[(i, day, window.opens_at(day)) for i, day in enumerate(days)], at=now)
        if campaign.local_time:
            pairs = await repo.local_days(campaign.id)
            await repo.set_local_send_after(
                campaign.id, [(day, tz, window.opens_at(day, _zone(tz))) for day, tz in pairs], at=now)
    await session.flush()

    last_day = days[-1] if days else first
    pace = f"{limit} messages/day" if limit else f"all {pending} messages"
    return Activation(campaign=campaign, start_date=first, recipients_scheduled=pending, daily_limit=limit,
                      estimated_days=max(1, len(days)), estimated_completion_date=last_day,
                      message=f"Campaign activated. Sending {pace} starting {first.isoformat()}")
