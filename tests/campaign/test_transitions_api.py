"""Every lifecycle action through the HTTP API, from every state, on both databases."""

from __future__ import annotations

import uuid
from datetime import timedelta
from typing import Any

import httpx
import pytest
from sqlalchemy import select

from clarion.campaign import service
from clarion.db import Database
from clarion.kit.clock import clock, utcnow
from clarion.models import DomainEvent
from tests.campaign.helpers import CAMPAIGNS, add_recipients, campaign, new_campaign, new_contact

STATES = ("draft", "ai_generating", "pending_review", "approved", "scheduled", "running", "paused",
          "completed", "cancelled", "failed")

# How each state is reached: HTTP actions, or "@name" for a service action no endpoint exposes (the AI drafting
# and the dispatcher, which come with later issues, are the ones that complete or fail a campaign).
PATHS: dict[str, list[str]] = {
    "draft": [],
    "ai_generating": ["@begin_ai_generation"],
    "pending_review": ["submit-for-review"],
    "approved": ["submit-for-review", "approve"],
    "scheduled": ["schedule"],
    "running": ["start"],
    "paused": ["start", "pause"],
    "completed": ["start", "@complete"],
    "cancelled": ["cancel"],
    "failed": ["start", "@fail"],
}

# Hand-written from the issue: action → {state it is allowed from: resulting state}; anything else is a 409.
EXPECTED: dict[str, dict[str, str]] = {
    "schedule": {"draft": "scheduled", "approved": "scheduled"},
    "start": {"draft": "running", "approved": "running", "scheduled": "running"},
    "pause": {"running": "paused"},
    "resume": {"paused": "running"},
    "cancel": {s: "cancelled" for s in STATES if s not in ("completed", "cancelled", "failed")},
    "submit-for-review": {"draft": "pending_review", "ai_generating": "pending_review"},
    "approve": {"pending_review": "approved"},
    "request-changes": {"pending_review": "draft"},
    "activate-later": {"draft": "scheduled", "approved": "scheduled"},
    "activate-today": {"draft": "running", "approved": "running", "scheduled": "running"},
}


async def _post_action(api: httpx.AsyncClient, campaign_id: str, action: str) -> httpx.Response:
    if action == "schedule":
        at = (utcnow() + timedelta(days=2)).isoformat()
        return await api.post(f"{CAMPAIGNS}/{campaign_id}/schedule", json={"scheduled_at": at})
    if action == "activate-later":
        start = clock.today() + timedelta(days=3)
        return await api.post(f"{CAMPAIGNS}/{campaign_id}/activate", params={"start_date": start.isoformat()})
    if action == "activate-today":
        return await api.post(f"{CAMPAIGNS}/{campaign_id}/activate", params={"start_date": clock.today().isoformat()})
    return await api.post(f"{CAMPAIGNS}/{campaign_id}/{action}")


async def campaign_in(api: httpx.AsyncClient, db: Database, state: str, *, with_recipient: bool = False,
                      ) -> dict[str, Any]:
    created = await new_campaign(api)
    if with_recipient:
        contact = await new_contact(api, email=f"r{uuid.uuid4().hex[:8]}@example.com")
        assert (await add_recipients(api, created["id"], {"contact_ids": [contact["id"]]})).status_code == 200
    for step in PATHS[state]:
        if step.startswith("@"):
            async with db.transaction() as session:
                reason = {"reason": "provider rejected the template"} if step == "@fail" else {}
                await service.transition(session, api.tenant.id, uuid.UUID(created["id"]),  # type: ignore[attr-defined]
                                         step[1:], **reason)
        else:
            response = await _post_action(api, created["id"], step)
            assert response.status_code == 200, response.text
    current = await campaign(api, created["id"])
    assert current["status"] == state
    return current


@pytest.mark.parametrize("state", STATES)
@pytest.mark.parametrize("action", list(EXPECTED))
async def test_action_from_state(api: httpx.AsyncClient, db: Database, action: str, state: str) -> None:
    subject = await campaign_in(api, db, state, with_recipient=action.startswith("activate"))
    response = await _post_action(api, subject["id"], action)
    expected = EXPECTED[action].get(state)
    after = await campaign(api, subject["id"])
    if expected is None:
        assert response.status_code == 409, response.text
        problem = response.json()
        assert response.headers["content-type"].startswith("application/problem+json")
        assert state in problem["detail"]
        assert ("is final" in problem["detail"]) == (state in ("completed", "cancelled", "failed"))
        assert after["status"] == state
    else:
        assert response.status_code == 200, response.text
        assert response.json()["status"] == expected
        assert after["status"] == expected


async def test_refusal_names_current_state_and_allowed_ones(api: httpx.AsyncClient) -> None:
    draft = await new_campaign(api)
    response = await api.post(f"{CAMPAIGNS}/{draft['id']}/pause")
    assert response.status_code == 409
    assert response.json()["detail"] == ("cannot pause a campaign in draft; allowed from draft: scheduled, "
                                         "running (start), pending_review, ai_generating, cancelled")
    assert (await api.post(f"{CAMPAIGNS}/{draft['id']}/cancel")).status_code == 200
    response = await api.post(f"{CAMPAIGNS}/{draft['id']}/resume")
    assert response.json()["detail"] == "cannot resume a campaign that is cancelled: cancelled is final"
    response = await api.post(f"{CAMPAIGNS}/{draft['id']}/start")
    assert response.status_code == 409 and "cancelled is final" in response.json()["detail"]


async def test_action_responses_carry_seed_002_messages(api: httpx.AsyncClient) -> None:
    created = await new_campaign(api, name="Summer Sale 2025")
    started = (await api.post(f"{CAMPAIGNS}/{created['id']}/start")).json()
    assert started["campaign_id"] == created["id"]
    assert started["message"] == "Campaign 'Summer Sale 2025' started"
    assert started["started_at"] is not None
    paused = (await api.post(f"{CAMPAIGNS}/{created['id']}/pause")).json()
    assert (paused["status"], paused["message"]) == ("paused", "Campaign 'Summer Sale 2025' paused")
    resumed = (await api.post(f"{CAMPAIGNS}/{created['id']}/resume")).json()
    assert (resumed["status"], resumed["message"]) == ("running", "Campaign 'Summer Sale 2025' resumed")
    cancelled = (await api.post(f"{CAMPAIGNS}/{created['id']}/cancel")).json()
    assert (cancelled["status"], cancelled["message"]) == ("cancelled", "Campaign 'Summer Sale 2025' cancelled")


async def test_starting_a_draft_records_both_steps_as_events(api: httpx.AsyncClient, db: Database) -> None:
    created = await new_campaign(api)
    assert (await api.post(f"{CAMPAIGNS}/{created['id']}/start")).status_code == 200
    async with db.transaction() as session:
        rows = await session.execute(
            select(DomainEvent.name, DomainEvent.payload)
            .where(DomainEvent.tenant_id == api.tenant.id)  # type: ignore[attr-defined]
            .order_by(DomainEvent.occurred_at, DomainEvent.id))
        events = [(name, payload) for name, payload in rows.all() if payload.get("campaign_id") == created["id"]]
    assert [name for name, _ in events] == ["crm.campaign.created", "crm.campaign.scheduled", "crm.campaign.started"]
    assert events[-1][1]["previous_status"] == "scheduled"


async def test_schedule_needs_an_aware_future_time(api: httpx.AsyncClient) -> None:
    created = await new_campaign(api)
    url = f"{CAMPAIGNS}/{created['id']}/schedule"
    naive = await api.post(url, json={"scheduled_at": "2031-01-01T09:00:00"})
    assert naive.status_code == 422
    assert naive.json()["errors"][0]["loc"][-1] == "scheduled_at"
    past = await api.post(url, json={"scheduled_at": (utcnow() - timedelta(minutes=1)).isoformat()})
    assert past.status_code == 422 and "past" in past.json()["detail"]
    missing = await api.post(url, json={})
    assert missing.status_code == 422
    ok = await api.post(url, json={"scheduled_at": "2031-01-01T09:00:00+02:00"})
    assert ok.status_code == 200, ok.text
    assert ok.json()["scheduled_at"].startswith("2031-01-01T07:00:00")
    assert ok.json()["status"] == "scheduled"
