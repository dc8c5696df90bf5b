"""Send planning: days under the daily limit, send windows and weekdays, local time across DST, priority."""

from __future__ import annotations

import io
import uuid
from collections import Counter
from datetime import UTC, date, datetime, timedelta

import httpx
from sqlalchemy import select

from clarion.campaign.sending import SendOutcome
from clarion.db import Database
from clarion.kit.clock import clock
from clarion.models import CampaignSendSchedule
from tests.campaign.helpers import CAMPAIGNS, add_recipients, new_campaign
from tests.campaign.test_sending import (
    MONDAY_10,
    assert_counters_match,
    claim,
    contacts,
    frozen_clock,  # noqa: F401 - autouse: the clock is frozen at Monday 2025-01-06 10:00 UTC
    recipients,
    record,
    running_campaign,
)


async def schedule_rows(db: Database, campaign_id: uuid.UUID) -> list[tuple[date, int, int, int, str]]:
    async with db.transaction() as session:
        stmt = (select(CampaignSendSchedule).where(CampaignSendSchedule.campaign_id == campaign_id)
                .order_by(CampaignSendSchedule.send_date))
        return [(s.send_date, s.batch_size, s.messages_sent, s.messages_remaining, s.status)
                for s in (await session.execute(stmt)).scalars().all()]


async def test_10000_recipients_at_250_a_day_take_40_days(api: httpx.AsyncClient, db: Database) -> None:
    csv = "email\n" + "".join(f"p{i}@example.com\n" for i in range(10_000))
    imported = await api.post("/api/v1/contacts/import",
                              files={"file": ("c.csv", io.BytesIO(csv.encode()), "text/csv")})
    assert imported.status_code == 200, imported.text
    created = await new_campaign(api, daily_send_limit=250, filter={"field": "email", "op": "starts_with",
                                                                     "value": "p"})
    added = await add_recipients(api, created["id"], use_target_audience="true")
    assert added.json()["recipients_added"] == 10_000, added.text
    response = await api.post(f"{CAMPAIGNS}/{created['id']}/activate", params={"start_date": "2025-01-15"})
    assert response.status_code == 200, response.text
    body = response.json()
    assert (body["recipients_scheduled"], body["daily_limit"], body["estimated_days"],
            body["estimated_completion_date"]) == (10_000, 250, 40, "2025-02-23")
    campaign_id = uuid.UUID(created["id"])
    rows = await recipients(db, campaign_id)
    per_day = Counter(r.scheduled_send_date for r in rows)
    days = [date(2025, 1, 15) + timedelta(days=i) for i in range(40)]
    assert per_day == dict.fromkeys(days, 250)
    # In id order: the first 250 go on the first day, and each slot opens at midnight UTC.
    assert rows[0].scheduled_send_date == rows[249].scheduled_send_date == date(2025, 1, 15)
    assert rows[250].scheduled_send_date == date(2025, 1, 16)
    assert {r.send_after for r in rows if r.scheduled_send_date == days[-1]} == \
        {datetime(2025, 2, 23, tzinfo=UTC)}
    assert await schedule_rows(db, campaign_id) == [(d, 250, 0, 250, "pending") for d in days]


async def test_send_window_hours_and_weekdays_shape_the_days(api: httpx.AsyncClient, db: Database) -> None:
    emails = await contacts(api, 10)
    created = await new_campaign(api, daily_send_limit=3,
                                 send_window={"start_hour": 9, "end_hour": 17, "weekdays": [0, 1, 2, 3, 4]})
    await add_recipients(api, created["id"], {"emails": emails})
    friday = "2025-01-10"
    body = (await api.post(f"{CAMPAIGNS}/{created['id']}/activate", params={"start_date": friday})).json()
    assert (body["estimated_days"], body["estimated_completion_date"]) == (4, "2025-01-15")
    rows = await recipients(db, uuid.UUID(created["id"]))
    expected_days = [date(2025, 1, 10)] * 3 + [date(2025, 1, 13)] * 3 + [date(2025, 1, 14)] * 3 + [date(2025, 1, 15)]
    assert [r.scheduled_send_date for r in rows] == expected_days
    assert [r.send_after for r in rows] == [datetime.combine(d, datetime.min.time(), UTC) + timedelta(hours=9)
                                           for d in expected_days]


async def test_a_closed_window_today_starts_tomorrow_and_claims_wait_for_it(api: httpx.AsyncClient,
                                                                          db: Database) -> None:
    clock.freeze(datetime(2025, 1, 6, 18, 0, tzinfo=UTC))  # Monday evening, after the window
    campaign_id = await running_campaign(api, await contacts(api, 2),
                                         send_window={"start_hour": 9, "end_hour": 17})
    rows = await recipients(db, campaign_id)
    assert {r.send_after for r in rows} == {datetime(2025, 1, 7, 9, tzinfo=UTC)}
    assert await claim(db, campaign_id=campaign_id) == []
    clock.freeze(datetime(2025, 1, 7, 9, 0, tzinfo=UTC))
    assert len(await claim(db, campaign_id=campaign_id)) == 2


async def test_local_time_follows_each_contacts_timezone_across_a_dst_change(api: httpx.AsyncClient,
                                                                           db: Database) -> None:
    # New York leaves EST (UTC-5) for EDT (UTC-4) on Sunday 2025-03-09.
    new_york_1 = (await contacts(api, 1, prefix="ny", timezone="America/New_York"))[0]
    berlin = (await contacts(api, 1, prefix="be", timezone="Europe/Berlin"))[0]
    new_york_2 = (await contacts(api, 1, prefix="ny", timezone="America/New_York"))[0]
    nowhere = (await contacts(api, 1, prefix="utc"))[0]
    created = await new_campaign(api, daily_send_limit=2, local_time=True,
                                 send_window={"start_hour": 9, "end_hour": 17})
    for email in (new_york_1, berlin, new_york_2, nowhere):  # one by one: recipient ids follow this order
        await add_recipients(api, created["id"], {"emails": [email]})
    response = await api.post(f"{CAMPAIGNS}/{created['id']}/activate", params={"start_date": "2025-03-08"})
    assert response.status_code == 200, response.text
    send_after = {r.email: r.send_after for r in await recipients(db, uuid.UUID(created["id"]))}
    assert send_after == {
        new_york_1: datetime(2025, 3, 8, 14, 0, tzinfo=UTC),   # 09:00 EST
        berlin: datetime(2025, 3, 8, 8, 0, tzinfo=UTC),        # 09:00 CET
        new_york_2: datetime(2025, 3, 9, 13, 0, tzinfo=UTC),   # 09:00 EDT, the day the clocks change
        nowhere: datetime(2025, 3, 9, 9, 0, tzinfo=UTC),       # no timezone: UTC
    }


async def test_higher_priority_campaigns_are_claimed_first(api: httpx.AsyncClient, db: Database) -> None:
    emails = await contacts(api, 6)
    low = await running_campaign(api, emails[:3], priority=9)
    high = await running_campaign(api, emails[3:], priority=10)
    # Every campaign of the tenant (one email account): the order is the point.
    claimed = await claim(db, limit=4, campaign_id=None, tenant_id=api.tenant.id)  # type: ignore[attr-defined]
    assert [c.campaign_id for c in claimed] == [high, high, high, low]


async def test_the_daily_limit_holds_across_pause_and_resume(api: httpx.AsyncClient, db: Database) -> None:
    campaign_id = await running_campaign(api, await contacts(api, 12), daily_send_limit=5)
    first = await claim(db, limit=3, campaign_id=campaign_id)
    await record(db, [SendOutcome(c.id, ok=True) for c in first])
    assert (await api.post(f"{CAMPAIGNS}/{campaign_id}/pause")).status_code == 200
    assert (await api.post(f"{CAMPAIGNS}/{campaign_id}/resume")).status_code == 200
    pending_days = Counter(r.scheduled_send_date for r in await recipients(db, campaign_id) if r.status == "pending")
    monday = MONDAY_10.date()
    assert pending_days == {monday: 2, monday + timedelta(days=1): 5, monday + timedelta(days=2): 2}
    assert len(await claim(db, limit=100, campaign_id=campaign_id)) == 2  # today's remaining quota, not a new day's worth
    clock.advance(timedelta(days=1))
    assert len(await claim(db, limit=100, campaign_id=campaign_id)) == 5
    rows = await schedule_rows(db, campaign_id)
    assert [(day, size) for day, size, *_ in rows] == [(monday, 5), (monday + timedelta(days=1), 5),
                                                       (monday + timedelta(days=2), 2)]
    assert rows[0][2:] == (3, 2, "pending")
    await assert_counters_match(db, campaign_id)


async def test_a_weekday_only_window_plans_and_a_bad_window_is_refused(api: httpx.AsyncClient) -> None:
    created = await new_campaign(api, daily_send_limit=1)
    await add_recipients(api, created["id"], {"emails": await contacts(api, 2)})
    await api.patch(f"{CAMPAIGNS}/{created['id']}", json={"send_window": {"weekdays": [6]}})
    accepted = await api.post(f"{CAMPAIGNS}/{created['id']}/activate")
    assert accepted.status_code == 200, accepted.text
    assert accepted.json()["estimated_days"] == 2
    invalid = await api.patch(f"{CAMPAIGNS}/{created['id']}", json={"send_window": {"start_hour": 9, "end_hour": 8}})
    assert invalid.status_code == 422
    assert "end_hour" in invalid.text
