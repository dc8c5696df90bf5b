"""Adding recipients (ids, emails, phones, target audience), counters, listing and cancelling them."""

from __future__ import annotations

from typing import Any

import httpx

from tests.campaign.helpers import CAMPAIGNS, add_recipients, campaign, new_campaign, new_contact


async def _contacts(api: httpx.AsyncClient) -> dict[str, dict[str, Any]]:
    """Five contacts: three premium New Yorkers (one unsubscribed from WhatsApp), one in Boston, one without phone."""
    return {
        "ann": await new_contact(api, email="ann@example.com", phone="+14694652751",
                                 attributes={"customer_tier": "premium", "city": "New York"}, tags=["fashion"]),
        "bob": await new_contact(api, email="bob@example.com", phone="+19453083188",
                                 attributes={"customer_tier": "premium", "city": "New York"}, tags=["fashion"]),
        "cid": await new_contact(api, email="cid@example.com", phone="+15005550006",
                                 attributes={"customer_tier": "premium", "city": "New York"}, tags=["fashion"],
                                 subscriptions={"whatsapp": "unsubscribed", "email": "unsubscribed"}),
        "dee": await new_contact(api, email="dee@example.com", phone="+12025550143",
                                 attributes={"customer_tier": "premium", "city": "Boston"}, tags=["fashion"]),
        "eve": await new_contact(api, email="eve@example.com",
                                 attributes={"customer_tier": "premium", "city": "New York"}, tags=["fashion"]),
    }


async def test_target_audience_adds_subscribed_matches_once(api: httpx.AsyncClient) -> None:
    people = await _contacts(api)
    created = await new_campaign(api, channel=None, template_name="summer_sale_promo", language_code="en_US",
                                 target_audience={"customer_tier": "premium", "city": "New York",
                                                  "tags": ["fashion"]})
    first = await add_recipients(api, created["id"], use_target_audience="true")
    assert first.status_code == 200, first.text
    # ann, bob subscribed on WhatsApp; cid unsubscribed; eve has no phone so no WhatsApp consent; dee is in Boston.
    assert first.json() == {
        "campaign_id": created["id"], "recipients_added": 2, "skipped_duplicates": 0, "skipped_unsubscribed": 2,
        "total_recipients": 2, "unknown": [], "message": "Added 2 recipients to campaign"}
    again = (await add_recipients(api, created["id"], use_target_audience="true")).json()
    assert (again["recipients_added"], again["skipped_duplicates"], again["skipped_unsubscribed"],
            again["total_recipients"]) == (0, 2, 2, 2)
    listed = (await api.get(f"{CAMPAIGNS}/{created['id']}/recipients")).json()["items"]
    assert {r["contact_id"] for r in listed} == {people["ann"]["id"], people["bob"]["id"]}
    ann = next(r for r in listed if r["contact_id"] == people["ann"]["id"])
    assert (ann["email"], ann["phone"], ann["status"]) == ("ann@example.com", "+14694652751", "pending")
    after = await campaign(api, created["id"])
    assert (after["total_target"], after["pending"]) == (2, 2)


async def test_filter_and_segment_audiences(api: httpx.AsyncClient) -> None:
    people = await _contacts(api)
    by_filter = await new_campaign(api, filter={"field": "attributes.city", "op": "eq", "value": "Boston"})
    added = (await add_recipients(api, by_filter["id"], use_target_audience="true")).json()
    assert added["recipients_added"] == 1
    segment = await api.post("/api/v1/segments", json={"name": "static", "kind": "static"})
    assert segment.status_code == 201, segment.text
    members = await api.post(f"/api/v1/segments/{segment.json()['id']}/members",
                             json={"contact_ids": [people["eve"]["id"], people["cid"]["id"]]})
    assert members.status_code in (200, 201), members.text
    by_segment = await new_campaign(api, segment_id=segment.json()["id"])
    added = (await add_recipients(api, by_segment["id"], use_target_audience="true")).json()
    assert (added["recipients_added"], added["skipped_unsubscribed"]) == (1, 1)  # cid unsubscribed from email


async def test_use_target_audience_needs_one(api: httpx.AsyncClient) -> None:
    created = await new_campaign(api)
    response = await add_recipients(api, created["id"], use_target_audience="true")
    assert response.status_code == 422
    assert "target audience" in response.json()["detail"]


async def test_explicit_ids_report_unknown_and_other_tenants_contacts(api: httpx.AsyncClient, db: Any) -> None:
    from tests.conftest import make_tenant

    people = await _contacts(api)
    other = await make_tenant(db, "Other")
    stranger = await api.post("/api/v1/contacts", json={"email": "stranger@example.com"}, headers=other.headers)
    missing = "00000000-0000-7000-8000-000000000001"
    created = await new_campaign(api)
    response = await add_recipients(api, created["id"], {"contact_ids": [
        people["ann"]["id"], people["ann"]["id"], people["cid"]["id"], stranger.json()["id"], missing]})
    assert response.status_code == 200, response.text
    body = response.json()
    assert (body["recipients_added"], body["skipped_duplicates"], body["skipped_unsubscribed"]) == (1, 0, 1)
    assert body["unknown"] == [stranger.json()["id"], missing]
    more = (await add_recipients(api, created["id"], {"contact_ids": [people["ann"]["id"], people["bob"]["id"]]}))
    assert (more.json()["recipients_added"], more.json()["skipped_duplicates"],
            more.json()["total_recipients"]) == (1, 1, 2)


async def test_emails_are_normalised_and_unknown_ones_reported_not_created(api: httpx.AsyncClient) -> None:
    await _contacts(api)
    created = await new_campaign(api)
    response = await add_recipients(api, created["id"], {"emails": [
        " ANN@Example.com ", "bob@example.com", "nobody@example.com", "not an email"]})
    body = response.json()
    assert (body["recipients_added"], body["unknown"]) == (2, ["nobody@example.com", "not an email"])
    contacts = (await api.get("/api/v1/contacts", params={"q": "nobody"})).json()["items"]
    assert contacts == []


async def test_seed_002_phone_numbers(api: httpx.AsyncClient) -> None:
    await _contacts(api)
    created = await new_campaign(api, channel="whatsapp")
    response = await add_recipients(api, created["id"], {"phone_numbers": [
        "14694652751", "+1 945 308 3188", "15005550006", "15551234567", "12"]})
    body = response.json()
    assert response.status_code == 200, response.text
    assert (body["recipients_added"], body["skipped_unsubscribed"]) == (2, 1)
    assert body["unknown"] == ["15551234567", "12"]
    assert body["total_recipients"] == 2


async def test_body_must_name_exactly_one_source(api: httpx.AsyncClient) -> None:
    created = await new_campaign(api)
    for body, params in (({}, {}), (None, {}), ({"emails": ["a@example.com"], "contact_ids": []}, {}),
                         ({"emails": ["a@example.com"]}, {"use_target_audience": "true"}),
                         ({"phones": ["1"]}, {})):
        response = await add_recipients(api, created["id"], body, **params)
        assert response.status_code == 422, (body, params, response.text)


async def test_recipients_not_added_to_final_campaigns(api: httpx.AsyncClient) -> None:
    people = await _contacts(api)
    created = await new_campaign(api)
    await api.post(f"{CAMPAIGNS}/{created['id']}/cancel")
    response = await add_recipients(api, created["id"], {"contact_ids": [people["ann"]["id"]]})
    assert response.status_code == 409
    assert "cancelled is final" in response.json()["detail"]


async def test_list_recipients_by_status_with_cursor(api: httpx.AsyncClient) -> None:
    ids = [(await new_contact(api, email=f"p{i}@example.com"))["id"] for i in range(5)]
    created = await new_campaign(api)
    await add_recipients(api, created["id"], {"contact_ids": ids})
    seen, cursor = [], None
    while True:
        params: dict[str, Any] = {"limit": 2, "status": "pending", **({"cursor": cursor} if cursor else {})}
        page = (await api.get(f"{CAMPAIGNS}/{created['id']}/recipients", params=params)).json()
        seen += [r["contact_id"] for r in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert sorted(seen) == sorted(ids) and len(seen) == 5
    none_sent = (await api.get(f"{CAMPAIGNS}/{created['id']}/recipients", params={"status": "sent"})).json()
    assert none_sent["items"] == []
    assert (await api.get(f"{CAMPAIGNS}/{created['id']}/recipients", params={"status": "bogus"})).status_code == 422


async def test_cancel_withdraws_every_unsent_recipient(api: httpx.AsyncClient) -> None:
    ids = [(await new_contact(api, email=f"c{i}@example.com"))["id"] for i in range(3)]
    created = await new_campaign(api)
    await add_recipients(api, created["id"], {"contact_ids": ids})
    await api.post(f"{CAMPAIGNS}/{created['id']}/start")
    cancelled = await api.post(f"{CAMPAIGNS}/{created['id']}/cancel")
    assert cancelled.status_code == 200
    assert (cancelled.json()["pending"], cancelled.json()["total_target"]) == (0, 3)
    statuses = {r["status"] for r in (await api.get(f"{CAMPAIGNS}/{created['id']}/recipients")).json()["items"]}
    assert statuses == {"cancelled"}
    listed = (await api.get(f"{CAMPAIGNS}/{created['id']}/recipients", params={"status": "cancelled"})).json()
    assert len(listed["items"]) == 3
    stats = (await api.get(f"{CAMPAIGNS}/{created['id']}/stats")).json()
    assert stats["pending"] == 0
