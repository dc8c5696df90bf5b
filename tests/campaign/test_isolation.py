"""Tenant B sees none of tenant A's campaigns: every campaign endpoint answers 404."""

from __future__ import annotations

import httpx

from clarion.db import Database
from tests.campaign.helpers import CAMPAIGNS, add_recipients, campaign, new_campaign, new_contact
from tests.conftest import make_tenant


async def test_every_campaign_endpoint_is_404_for_another_tenant(api: httpx.AsyncClient, db: Database) -> None:
    contact = await new_contact(api, email="mine@example.com")
    mine = await new_campaign(api)
    await add_recipients(api, mine["id"], {"contact_ids": [contact["id"]]})
    other = await make_tenant(db, "Intruder")
    url = f"{CAMPAIGNS}/{mine['id']}"
    calls = [
        ("GET", url, None, None), ("PATCH", url, {"name": "stolen"}, None), ("DELETE", url, None, None),
        ("POST", f"{url}/schedule", {"scheduled_at": "2031-01-01T00:00:00Z"}, None),
        ("POST", f"{url}/start", None, None), ("POST", f"{url}/pause", None, None),
        ("POST", f"{url}/resume", None, None), ("POST", f"{url}/cancel", None, None),
        ("POST", f"{url}/submit-for-review", None, None), ("POST", f"{url}/approve", None, None),
        ("POST", f"{url}/request-changes", None, None),
        ("POST", f"{url}/activate", None, {"start_date": "2031-01-01"}),
        ("POST", f"{url}/recipients", {"contact_ids": [contact["id"]]}, None),
        ("POST", f"{url}/recipients", None, {"use_target_audience": "true"}),
        ("GET", f"{url}/recipients", None, None), ("GET", f"{url}/stats", None, None),
    ]
    for method, path, body, params in calls:
        response = await api.request(method, path, json=body, params=params, headers=other.headers)
        assert response.status_code == 404, (method, path, response.status_code, response.text)
        assert response.json()["code"] == "not_found"
    listed = (await api.get(CAMPAIGNS, headers=other.headers)).json()
    assert listed["items"] == []
    assert (await campaign(api, mine["id"]))["name"] == mine["name"]  # untouched


async def test_another_tenants_segment_or_template_cannot_be_used(api: httpx.AsyncClient, db: Database) -> None:
    other = await make_tenant(db, "Neighbour")
    segment = await api.post("/api/v1/segments", json={"name": "theirs", "kind": "static"}, headers=other.headers)
    template = await api.post("/api/v1/templates", json={"name": "t", "channel": "sms", "body_text": "hi"},
                              headers=other.headers)
    assert segment.status_code == 201 and template.status_code == 201
    for field, value in (("segment_id", segment.json()["id"]), ("template_id", template.json()["id"])):
        response = await api.post(CAMPAIGNS, json={"name": "x", "channel": "sms", field: value})
        assert response.status_code == 422
        assert response.json()["errors"][0]["loc"] == ["body", field]
