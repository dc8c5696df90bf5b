"""Creating, validating, listing, editing and deleting campaigns through the API."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import httpx
import pytest

from clarion.kit.clock import utcnow
from tests.campaign.helpers import CAMPAIGNS, campaign, new_campaign

SEED_002_BODY = {
    "name": "Summer Sale 2025",
    "description": "Promotional campaign for summer sale",
    "template_name": "summer_sale_promo",
    "language_code": "en_US",
    "daily_send_limit": 250,
    "priority": 5,
    "target_audience": {"customer_tier": "premium", "city": "New York", "tags": ["fashion", "accessories"]},
    "template_components": [
        {"type": "header", "parameters": [{"type": "image", "image": {"link": "https://example.com/b.jpg"}}]},
        {"type": "body", "parameters": [{"type": "text", "text": "30%"}]},
    ],
}


async def _template(api: httpx.AsyncClient, channel: str) -> str:
    body: dict[str, Any] = {"name": f"{channel} template", "channel": channel}
    if channel == "email":
        body.update(subject="Hi {{ contact.first_name }}", body_html="<p>Sale!</p>")
    else:
        body["body_text"] = "Sale!"
    response = await api.post("/api/v1/templates", json=body)
    assert response.status_code == 201, response.text
    return str(response.json()["id"])


async def test_seed_002_create_is_a_whatsapp_draft_with_its_audience_as_a_filter(api: httpx.AsyncClient) -> None:
    response = await api.post(CAMPAIGNS, json=SEED_002_BODY)
    assert response.status_code == 201, response.text
    body = response.json()
    assert body["channel"] == "whatsapp"
    assert body["status"] == "draft"
    assert body["message"] == "Campaign 'Summer Sale 2025' created successfully"
    assert body["campaign_id"] == body["id"]
    assert body["target_audience"] == SEED_002_BODY["target_audience"]
    assert body["filter"] is not None  # the translated tree, used when recipients are added
    assert body["template_components"] == SEED_002_BODY["template_components"]
    assert (body["daily_send_limit"], body["priority"], body["currency"]) == (250, 5, "USD")
    assert all(body[c] == 0 for c in ("total_target", "sent", "delivered", "opened", "pending", "spent", "revenue"))
    assert (await campaign(api, body["id"]))["name"] == "Summer Sale 2025"


async def test_defaults_and_money_fields(api: httpx.AsyncClient) -> None:
    body = await new_campaign(api, budget=150_000, currency="eur", type="drip")
    assert (body["type"], body["priority"], body["budget"], body["currency"]) == ("drip", 5, 150_000, "EUR")


@pytest.mark.parametrize(("patch", "field"), [
    ({"name": ""}, "name"),
    ({"name": None}, "name"),
    ({"type": "newsletter"}, "type"),
    ({"channel": "fax"}, "channel"),
    ({"channel": None}, "channel"),
    ({"daily_send_limit": 0}, "daily_send_limit"),
    ({"priority": 0}, "priority"),
    ({"priority": 11}, "priority"),
    ({"budget": -1}, "budget"),
    ({"currency": "EUD"}, "currency"),
    ({"currency": "dollars"}, "currency"),
    ({"language_code": "english please"}, "language_code"),
    ({"scheduled_at": "2031-01-01T09:00:00"}, "scheduled_at"),
    ({"scheduled_at": "2001-01-01T09:00:00Z"}, "scheduled_at"),
    ({"template_id": "00000000-0000-7000-8000-000000000000"}, "template_id"),
    ({"segment_id": "00000000-0000-7000-8000-000000000000"}, "segment_id"),
    ({"template_name": "summer_sale_promo"}, "template_name"),  # on an email campaign
    ({"colour": "red"}, "colour"),
])
async def test_each_bad_field_is_a_422_naming_it(api: httpx.AsyncClient, patch: dict[str, Any], field: str) -> None:
    body = {"name": "Bad", "channel": "email", **patch}
    response = await api.post(CAMPAIGNS, json=body)
    assert response.status_code == 422, response.text
    problem = response.json()
    assert problem["status"] == 422
    assert field in {str(part) for error in problem["errors"] for part in error["loc"]}, problem


async def test_filter_errors_name_the_node(api: httpx.AsyncClient) -> None:
    response = await api.post(CAMPAIGNS, json={"name": "x", "channel": "email",
                                               "filter": {"all": [{"field": "nope", "op": "eq", "value": 1}]}})
    assert response.status_code == 422
    assert response.json()["detail"].startswith("filter")


async def test_at_most_one_audience(api: httpx.AsyncClient) -> None:
    response = await api.post(CAMPAIGNS, json={
        "name": "x", "channel": "email", "filter": {"field": "tags", "op": "has", "value": "vip"},
        "target_audience": {"customer_tier": "premium"}})
    assert response.status_code == 422
    assert "at most one" in response.json()["detail"]
    assert response.json()["errors"][0]["loc"] == ["body", "target_audience"]


async def test_template_must_match_the_channel(api: httpx.AsyncClient) -> None:
    sms_template = await _template(api, "sms")
    mismatch = await api.post(CAMPAIGNS, json={"name": "x", "channel": "email", "template_id": sms_template})
    assert mismatch.status_code == 422
    assert "is for sms" in mismatch.json()["detail"]
    inferred = await api.post(CAMPAIGNS, json={"name": "x", "template_id": sms_template})
    assert inferred.status_code == 201
    assert inferred.json()["channel"] == "sms"
    changed = await api.patch(f"{CAMPAIGNS}/{inferred.json()['id']}", json={"channel": "email"})
    assert changed.status_code == 422 and "template_id" in changed.json()["detail"]


async def test_segment_audience(api: httpx.AsyncClient) -> None:
    segment = await api.post("/api/v1/segments", json={
        "name": "VIP", "filter": {"field": "tags", "op": "has", "value": "vip"}})
    assert segment.status_code == 201, segment.text
    body = await new_campaign(api, segment_id=segment.json()["id"])
    assert body["segment_id"] == segment.json()["id"]


async def test_list_filters_and_newest_first_pagination(api: httpx.AsyncClient) -> None:
    made = []
    for i, (channel, type_) in enumerate([("email", "broadcast"), ("sms", "drip"), ("email", "drip"),
                                          ("whatsapp", "scheduled"), ("email", "follow_up")]):
        made.append(await new_campaign(api, name=f"Promo {i} Autumn" if i % 2 else f"Promo {i}",
                                       channel=channel, type=type_))
    await api.post(f"{CAMPAIGNS}/{made[0]['id']}/start")

    seen, cursor = [], None
    while True:
        page = (await api.get(CAMPAIGNS, params={"limit": 2, **({"cursor": cursor} if cursor else {})})).json()
        seen += [c["id"] for c in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == [c["id"] for c in reversed(made)]

    async def names(**params: Any) -> list[str]:
        response = await api.get(CAMPAIGNS, params=params)
        assert response.status_code == 200, response.text
        return [c["name"] for c in response.json()["items"]]

    assert await names(channel="email") == ["Promo 4", "Promo 2", "Promo 0"]
    assert await names(type="drip") == ["Promo 2", "Promo 1 Autumn"]
    assert await names(status="running") == ["Promo 0"]
    assert await names(q="aUTUMN") == ["Promo 3 Autumn", "Promo 1 Autumn"]
    assert await names(q="%") == []
    today = utcnow().date()
    assert len(await names(created_from=today.isoformat(), created_to=today.isoformat())) == 5
    assert await names(created_from=(today + timedelta(days=1)).isoformat()) == []
    assert await names(created_to=(today - timedelta(days=1)).isoformat()) == []
    naive = await api.get(CAMPAIGNS, params={"created_from": "2025-01-01T00:00:00"})
    assert naive.status_code == 422 and "created_from" in naive.json()["detail"]
    assert (await api.get(CAMPAIGNS, params={"status": "active"})).status_code == 422
    assert (await api.get(CAMPAIGNS, params={"cursor": "garbage!"})).status_code == 422


async def test_patch_changes_fields(api: httpx.AsyncClient) -> None:
    created = await new_campaign(api)
    response = await api.patch(f"{CAMPAIGNS}/{created['id']}", json={
        "name": "Winter Sale", "priority": 9, "daily_send_limit": 100,
        "target_audience": {"customer_tier": "gold"}})
    assert response.status_code == 200, response.text
    body = response.json()
    assert (body["name"], body["priority"], body["daily_send_limit"]) == ("Winter Sale", 9, 100)
    assert body["target_audience"] == {"customer_tier": "gold"} and body["filter"] is not None
    cleared = (await api.patch(f"{CAMPAIGNS}/{created['id']}", json={"filter": None})).json()
    assert cleared["filter"] is None and cleared["target_audience"] is None
    assert (await api.patch(f"{CAMPAIGNS}/{created['id']}", json={"priority": None})).status_code == 422


async def test_audience_and_channel_change_only_in_draft(api: httpx.AsyncClient) -> None:
    created = await new_campaign(api)
    assert (await api.post(f"{CAMPAIGNS}/{created['id']}/start")).status_code == 200
    for change in ({"target_audience": {"customer_tier": "gold"}}, {"segment_id": None},
                   {"filter": {"field": "tags", "op": "has", "value": "x"}}, {"channel": "sms"}):
        response = await api.patch(f"{CAMPAIGNS}/{created['id']}", json=change)
        assert response.status_code == 409, change
        assert "only a draft" in response.json()["detail"]
    renamed = await api.patch(f"{CAMPAIGNS}/{created['id']}", json={"name": "Renamed", "channel": "email"})
    assert renamed.status_code == 200
    await api.post(f"{CAMPAIGNS}/{created['id']}/cancel")
    assert (await api.patch(f"{CAMPAIGNS}/{created['id']}", json={"description": "why it stopped"})).status_code == 200
    frozen = await api.patch(f"{CAMPAIGNS}/{created['id']}", json={"daily_send_limit": 5})
    assert frozen.status_code == 409 and "cancelled" in frozen.json()["detail"]


async def test_only_drafts_can_be_deleted(api: httpx.AsyncClient) -> None:
    draft = await new_campaign(api)
    assert (await api.delete(f"{CAMPAIGNS}/{draft['id']}")).status_code == 204
    assert (await api.get(f"{CAMPAIGNS}/{draft['id']}")).status_code == 404
    running = await new_campaign(api)
    await api.post(f"{CAMPAIGNS}/{running['id']}/start")
    refused = await api.delete(f"{CAMPAIGNS}/{running['id']}")
    assert refused.status_code == 409 and "running" in refused.json()["detail"]
    assert (await campaign(api, running["id"]))["status"] == "running"


async def test_read_only_key_cannot_write(api: httpx.AsyncClient) -> None:
    created = await new_campaign(api)
    headers = api.tenant.read_headers  # type: ignore[attr-defined]
    assert (await api.get(f"{CAMPAIGNS}/{created['id']}", headers=headers)).status_code == 200
    assert (await api.post(f"{CAMPAIGNS}/{created['id']}/start", headers=headers)).status_code == 403
    assert (await api.post(CAMPAIGNS, json={"name": "x", "channel": "sms"}, headers=headers)).status_code == 403
