"""Seed 002's stats shape and rates, and activation (start date, estimates, validations)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import UTC, datetime

import httpx
import pytest
from sqlalchemy import update

from clarion.db import Database
from clarion.kit.clock import clock
from clarion.models import Campaign
from tests.campaign.helpers import (
    CAMPAIGNS,
    add_recipients,
    bulk_contacts,
    campaign,
    new_campaign,
    new_contact,
)


@pytest.fixture
def jan_10_2025() -> Iterator[None]:
    clock.freeze(datetime(2025, 1, 10, 12, 0, tzinfo=UTC))
    try:
        yield
    finally:
        clock.reset()


async def _set_counters(db: Database, campaign_id: str, **counters: int) -> None:
    """Sending and tracking arrive with the next issue; until then the counters are set directly."""
    async with db.transaction() as session:
        await session.execute(update(Campaign).where(Campaign.id == uuid.UUID(campaign_id)).values(**counters))


async def test_stats_shape_and_seed_002_rates(api: httpx.AsyncClient, db: Database) -> None:
    created = await new_campaign(api, name="Summer Sale 2025", budget=50_000, currency="EUR")
    await _set_counters(db, created["id"], total_target=10_000, sent=2500, delivered=2400, opened=1800, failed=50,
                        pending=7450, clicked=300, converted=40, bounced=10, skipped=5, revenue=123_456, spent=9_900)
    response = await api.get(f"{CAMPAIGNS}/{created['id']}/stats")
    assert response.status_code == 200
    stats = response.json()
    assert stats == {
        "campaign_id": created["id"], "campaign_name": "Summer Sale 2025", "status": "draft",
        "total_target": 10_000, "sent": 2500, "delivered": 2400, "read": 1800, "failed": 50, "pending": 7450,
        "progress_percentage": 25.0, "delivery_rate": 96.0, "read_rate": 72.0, "estimated_completion_date": None,
        "opened": 1800, "clicked": 300, "converted": 40, "bounced": 10, "skipped": 5, "revenue": 123_456,
        "spent": 9_900, "budget": 50_000, "currency": "EUR",
        "opened_total": 0, "clicked_total": 0, "open_rate": 72.0, "click_rate": 12.0}
    listed = (await api.get(CAMPAIGNS)).json()["items"][0]
    assert listed["progress_percentage"] == 25.0


async def test_rates_are_zero_without_a_denominator_and_rounded_to_one_decimal(api: httpx.AsyncClient,
                                                                              db: Database) -> None:
    empty = await new_campaign(api)
    stats = (await api.get(f"{CAMPAIGNS}/{empty['id']}/stats")).json()
    assert (stats["progress_percentage"], stats["delivery_rate"], stats["read_rate"]) == (0.0, 0.0, 0.0)
    odd = await new_campaign(api)
    await _set_counters(db, odd["id"], total_target=3, sent=1, delivered=1, opened=0)
    stats = (await api.get(f"{CAMPAIGNS}/{odd['id']}/stats")).json()
    assert (stats["progress_percentage"], stats["delivery_rate"], stats["read_rate"]) == (33.3, 100.0, 0.0)


async def test_seed_002_ten_thousand_at_250_a_day_take_40_days(api: httpx.AsyncClient, db: Database,
                                                              jan_10_2025: None) -> None:
    await bulk_contacts(api, db, 10_000, attributes="premium")
    created = await new_campaign(api, channel=None, template_name="summer_sale_promo", language_code="en_US",
                                 daily_send_limit=250, target_audience={"tier": "premium"})
    added = await add_recipients(api, created["id"], use_target_audience="true")
    assert added.json()["recipients_added"] == 0  # WhatsApp needs a phone: e-mail-only contacts are left out
    email_twin = await new_campaign(api, daily_send_limit=250, target_audience={"tier": "premium"})
    added = await add_recipients(api, email_twin["id"], use_target_audience="true")
    assert added.status_code == 200, added.text
    assert (added.json()["recipients_added"], added.json()["total_recipients"]) == (10_000, 10_000)

    response = await api.post(f"{CAMPAIGNS}/{email_twin['id']}/activate", params={"start_date": "2025-01-15"})
    assert response.status_code == 200, response.text
    assert response.json() == {
        "campaign_id": email_twin["id"], "status": "scheduled", "start_date": "2025-01-15",
        "recipients_scheduled": 10_000, "daily_limit": 250, "estimated_days": 40,
        "estimated_completion_date": "2025-02-23",
        "message": "Campaign activated. Sending 250 messages/day starting 2025-01-15"}
    stored = await campaign(api, email_twin["id"])
    assert (stored["start_date"], stored["status"]) == ("2025-01-15", "scheduled")
    stats = (await api.get(f"{CAMPAIGNS}/{email_twin['id']}/stats")).json()
    assert (stats["estimated_completion_date"], stats["pending"]) == ("2025-02-23", 10_000)


async def test_activate_defaults_to_tomorrow_and_starts_today_when_asked(api: httpx.AsyncClient,
                                                                        jan_10_2025: None) -> None:
    contact = await new_contact(api, email="only@example.com")
    later = await new_campaign(api)
    await add_recipients(api, later["id"], {"contact_ids": [contact["id"]]})
    response = (await api.post(f"{CAMPAIGNS}/{later['id']}/activate")).json()
    assert (response["status"], response["start_date"], response["estimated_days"]) == ("scheduled", "2025-01-11", 1)
    assert response["estimated_completion_date"] == "2025-01-11"
    assert response["message"] == "Campaign activated. Sending all 1 messages starting 2025-01-11"
    assert (await campaign(api, later["id"]))["scheduled_at"].startswith("2025-01-11T00:00:00")

    today = await new_campaign(api, daily_send_limit=1)
    await add_recipients(api, today["id"], {"contact_ids": [contact["id"]]})
    response = (await api.post(f"{CAMPAIGNS}/{today['id']}/activate", params={"start_date": "2025-01-10"})).json()
    assert response["status"] == "running"
    assert (await campaign(api, today["id"]))["started_at"].startswith("2025-01-10T12:00:00")


async def test_activate_validations(api: httpx.AsyncClient, jan_10_2025: None) -> None:
    empty = await new_campaign(api)
    no_recipients = await api.post(f"{CAMPAIGNS}/{empty['id']}/activate", params={"start_date": "2025-01-15"})
    assert no_recipients.status_code == 422
    assert "no recipients" in no_recipients.json()["detail"]
    contact = await new_contact(api, email="x@example.com")
    await add_recipients(api, empty["id"], {"contact_ids": [contact["id"]]})
    past = await api.post(f"{CAMPAIGNS}/{empty['id']}/activate", params={"start_date": "2025-01-09"})
    assert past.status_code == 422 and "past" in past.json()["detail"]
    malformed = await api.post(f"{CAMPAIGNS}/{empty['id']}/activate", params={"start_date": "15/01/2025"})
    assert malformed.status_code == 422
    assert malformed.json()["errors"][0]["loc"][-1] == "start_date"
    assert (await campaign(api, empty["id"]))["status"] == "draft"
    await api.post(f"{CAMPAIGNS}/{empty['id']}/cancel")
    cancelled = await api.post(f"{CAMPAIGNS}/{empty['id']}/activate", params={"start_date": "2025-01-15"})
    assert cancelled.status_code == 409 and "cancelled is final" in cancelled.json()["detail"]
