from __future__ import annotations

import uuid
from typing import Any

import httpx

from clarion.audience.segments import service as segments
from clarion.db import Database
from clarion.models import Contact
from tests.conftest import make_tenant


async def _contact(api: httpx.AsyncClient, **fields: Any) -> dict[str, Any]:
    response = await api.post("/api/v1/contacts", json=fields)
    assert response.status_code == 201, response.text
    return response.json()


async def _segment(api: httpx.AsyncClient, **fields: Any) -> dict[str, Any]:
    response = await api.post("/api/v1/segments", json={"name": "S", **fields})
    assert response.status_code == 201, response.text
    return response.json()


async def _count(api: httpx.AsyncClient, segment_id: str) -> int:
    response = await api.get(f"/api/v1/segments/{segment_id}/count")
    assert response.status_code == 200, response.text
    return response.json()["count"]


VIP_FILTER = {"all": [{"field": "tags", "op": "has", "value": "vip"},
                      {"field": "attributes.score", "op": "gte", "value": 5}]}


async def test_dynamic_segment_crud(api: httpx.AsyncClient) -> None:
    created = await _segment(api, name="VIPs", description="big spenders", filter=VIP_FILTER)
    assert created["kind"] == "dynamic"
    assert created["filter"] == VIP_FILTER
    fetched = (await api.get(f"/api/v1/segments/{created['id']}")).json()
    assert fetched["name"] == "VIPs"

    patched = await api.patch(f"/api/v1/segments/{created['id']}", json={
        "name": "Top", "filter": {"field": "tags", "op": "has", "value": "top"}})
    assert patched.status_code == 200, patched.text
    assert patched.json()["name"] == "Top"
    assert patched.json()["filter"] == {"field": "tags", "op": "has", "value": "top"}
    assert patched.json()["description"] == "big spenders"

    assert (await api.delete(f"/api/v1/segments/{created['id']}")).status_code == 204
    assert (await api.get(f"/api/v1/segments/{created['id']}")).status_code == 404


async def test_segment_list_is_keyset_paginated(api: httpx.AsyncClient) -> None:
    ids = [(await _segment(api, name=f"S{i}", kind="static"))["id"] for i in range(5)]
    seen: list[str] = []
    cursor = None
    while True:
        page = (await api.get("/api/v1/segments", params={"limit": 2, **({"cursor": cursor} if cursor else {})})).json()
        seen += [s["id"] for s in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == ids


async def test_kind_decides_whether_a_filter_is_required(api: httpx.AsyncClient) -> None:
    missing = await api.post("/api/v1/segments", json={"name": "x", "kind": "dynamic"})
    assert missing.status_code == 422
    assert "filter" in missing.json()["detail"]
    static_with_filter = await api.post("/api/v1/segments", json={"name": "x", "kind": "static", "filter": VIP_FILTER})
    assert static_with_filter.status_code == 422
    static = await _segment(api, kind="static")
    assert static["filter"] is None
    changed_kind = await api.patch(f"/api/v1/segments/{static['id']}", json={"kind": "dynamic"})
    assert changed_kind.status_code == 422
    dynamic = await _segment(api, filter=VIP_FILTER)
    cleared = await api.patch(f"/api/v1/segments/{dynamic['id']}", json={"filter": None})
    assert cleared.status_code == 422


async def test_static_members_add_remove_and_report_unknown(api: httpx.AsyncClient, db: Database) -> None:
    mine = [await _contact(api, email=f"m{i}@example.com") for i in range(3)]
    other = await make_tenant(db, "Other")
    theirs = (await api.post("/api/v1/contacts", json={"email": "t@example.com"}, headers=other.headers)).json()
    segment = await _segment(api, kind="static")
    url = f"/api/v1/segments/{segment['id']}/members"
    stranger = str(uuid.uuid4())

    first = await api.post(url, json={"contact_ids": [mine[0]["id"], mine[1]["id"], theirs["id"], stranger]})
    assert first.status_code == 200, first.text
    assert first.json() == {"added": 2, "already_members": 0, "unknown": [theirs["id"], stranger]}
    again = await api.post(url, json={"contact_ids": [mine[0]["id"], mine[2]["id"], mine[2]["id"]]})
    assert again.json() == {"added": 1, "already_members": 1, "unknown": []}
    assert await _count(api, segment["id"]) == 3

    removed = await api.request("DELETE", url, json={"contact_ids": [mine[1]["id"], theirs["id"]]})
    assert removed.status_code == 200, removed.text
    assert removed.json() == {"removed": 1, "not_members": [theirs["id"]]}
    listed = (await api.get(f"/api/v1/segments/{segment['id']}/contacts")).json()
    assert {c["email"] for c in listed["items"]} == {"m0@example.com", "m2@example.com"}


async def test_members_only_belong_to_static_segments(api: httpx.AsyncClient) -> None:
    contact = await _contact(api, email="d@example.com")
    dynamic = await _segment(api, filter=VIP_FILTER)
    response = await api.post(f"/api/v1/segments/{dynamic['id']}/members", json={"contact_ids": [contact["id"]]})
    assert response.status_code == 409


async def test_count_and_contacts_preview_are_paginated(api: httpx.AsyncClient) -> None:
    for i in range(7):
        await _contact(api, email=f"p{i}@example.com", tags=["vip"] if i % 2 == 0 else [],
                       attributes={"score": i})
    await _contact(api, email="other@example.com", tags=["vip"], attributes={"score": "9"})
    segment = await _segment(api, filter=VIP_FILTER)  # vip and a numeric score ≥ 5
    assert await _count(api, segment["id"]) == 1
    everyone_vip = await _segment(api, filter={"field": "tags", "op": "has", "value": "vip"})
    assert await _count(api, everyone_vip["id"]) == 5
    seen: list[str] = []
    cursor = None
    while True:
        params = {"limit": 2, **({"cursor": cursor} if cursor else {})}
        page = (await api.get(f"/api/v1/segments/{everyone_vip['id']}/contacts", params=params)).json()
        assert len(page["items"]) <= 2
        seen += [c["email"] for c in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == ["p0@example.com", "p2@example.com", "p4@example.com", "p6@example.com", "other@example.com"]
    assert set(page["items"][0]) >= {"id", "email", "attributes", "tags", "subscriptions"}


async def test_dynamic_segment_follows_contact_changes(api: httpx.AsyncClient) -> None:
    contact = await _contact(api, email="c@example.com", attributes={"city": "Berlin"})
    segment = await _segment(api, filter={"all": [
        {"field": "attributes.city", "op": "eq", "value": "New York"},
        {"field": "subscription.email", "op": "eq", "value": "subscribed"}]})
    assert await _count(api, segment["id"]) == 0
    await api.patch(f"/api/v1/contacts/{contact['id']}", json={"attributes": {"city": "New York"}})
    assert await _count(api, segment["id"]) == 1
    await api.patch(f"/api/v1/contacts/{contact['id']}", json={"subscriptions": {"email": "unsubscribed"}})
    assert await _count(api, segment["id"]) == 0


async def test_seed_002_target_audience_becomes_a_filter(api: httpx.AsyncClient) -> None:
    await _contact(api, email="match@example.com", tags=["fashion", "shoes"],
                   attributes={"customer_tier": "premium", "city": "New York"})
    await _contact(api, email="no-tag@example.com", attributes={"customer_tier": "premium", "city": "New York"})
    await _contact(api, email="basic@example.com", tags=["fashion"],
                   attributes={"customer_tier": "basic", "city": "New York"})
    segment = await _segment(api, target_audience={"customer_tier": "premium", "city": "New York",
                                                   "tags": ["fashion"]})
    assert segment["filter"] == {"all": [
        {"field": "attributes.customer_tier", "op": "eq", "value": "premium"},
        {"field": "attributes.city", "op": "eq", "value": "New York"},
        {"field": "tags", "op": "has_all", "value": ["fashion"]}]}
    page = (await api.get(f"/api/v1/segments/{segment['id']}/contacts")).json()
    assert [c["email"] for c in page["items"]] == ["match@example.com"]
    bad = await api.post("/api/v1/segments", json={"name": "x", "target_audience": "premium"})
    assert bad.status_code == 422
    assert bad.json()["detail"].startswith("target_audience:")


async def test_preview_tries_a_filter_without_saving(api: httpx.AsyncClient) -> None:
    for i in range(4):
        await _contact(api, email=f"v{i}@example.com", first_name="Ada" if i < 3 else "Bob")
    response = await api.post("/api/v1/segments/preview", json={
        "filter": {"field": "first_name", "op": "starts_with", "value": "ad"}, "limit": 2})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["count"] == 3
    assert [c["email"] for c in body["items"]] == ["v0@example.com", "v1@example.com"]
    rest = (await api.post("/api/v1/segments/preview", json={
        "filter": {"field": "first_name", "op": "starts_with", "value": "ad"}, "limit": 2,
        "cursor": body["next_cursor"]})).json()
    assert [c["email"] for c in rest["items"]] == ["v2@example.com"]
    assert (await api.get("/api/v1/segments")).json()["items"] == []


async def test_malformed_filters_and_injection_attempts_are_422(api: httpx.AsyncClient) -> None:
    await _contact(api, email="safe@example.com", first_name="Safe")
    attempts = [
        ({"all": [{"field": "email", "op": "exists"}, {"field": "tags", "op": "has", "value": "x"},
                  {"any": [{"field": "emial", "op": "eq", "value": "x"}]}]},
         "filter.all[2].any[0]: unknown field 'emial'"),
        ({"field": "attributes.x'); DROP TABLE contacts;--", "op": "eq", "value": "1"},
         "filter: invalid attribute key"),
        ({"field": "email; DROP TABLE contacts", "op": "eq", "value": "x"}, "filter: unknown field"),
        ({"field": "email", "op": "= '' OR 1=1 --", "value": "x"}, "filter: unknown op"),
        ({"field": "first_name", "op": "in", "value": "(SELECT key_hash FROM api_keys)"}, "filter: 'in' needs a list"),
        ({"not": {"field": "email", "op": "eq", "value": {"$ne": None}}}, "filter.not: the value of 'eq' must be"),
        ("SELECT * FROM contacts", "filter: a node must be an object"),
    ]
    for tree, message in attempts:
        for url in ("/api/v1/segments", "/api/v1/segments/preview"):
            response = await api.post(url, json={"name": "x", "filter": tree} if url.endswith("segments")
                                      else {"filter": tree})
            assert response.status_code == 422, (tree, response.text)
            problem = response.json()
            assert problem["detail"].startswith(message), problem["detail"]
            assert problem["errors"][0]["loc"][:2] == ["body", "filter"]
    nested = (await api.post("/api/v1/segments/preview", json={"filter": attempts[0][0]})).json()
    assert nested["errors"][0]["loc"] == ["body", "filter", "all", 2, "any", 0]

    # A value that looks like SQL is only a string: it matches nothing, and the table is still there.
    sql_value = await api.post("/api/v1/segments/preview", json={"filter": {"any": [
        {"field": "first_name", "op": "eq", "value": "' OR '1'='1"},
        {"field": "email", "op": "contains", "value": "'; DROP TABLE contacts; --"},
        {"field": "attributes.tier", "op": "eq", "value": "x\"') OR 1=1 --"}]}})
    assert sql_value.status_code == 200, sql_value.text
    assert sql_value.json()["count"] == 0
    contacts = await api.get("/api/v1/contacts")
    assert [c["email"] for c in contacts.json()["items"]] == ["safe@example.com"]


async def test_another_tenants_segment_is_404(api: httpx.AsyncClient, db: Database) -> None:
    segment = await _segment(api, kind="static")
    other = await make_tenant(db, "Other")
    headers = other.headers
    for method, suffix in (("GET", ""), ("PATCH", ""), ("DELETE", ""), ("GET", "/count"), ("GET", "/contacts"),
                           ("POST", "/members"), ("DELETE", "/members")):
        body = {"contact_ids": [str(uuid.uuid4())]} if suffix == "/members" else (
            {"name": "mine now"} if method == "PATCH" else None)
        response = await api.request(method, f"/api/v1/segments/{segment['id']}{suffix}", json=body, headers=headers)
        assert response.status_code == 404, (method, suffix, response.status_code)
    assert (await api.get(f"/api/v1/segments/{segment['id']}")).json()["name"] == "S"


async def test_audience_select_composes_for_set_based_inserts(api: httpx.AsyncClient, db: Database) -> None:
    a = await _contact(api, email="a@example.com", phone="+14155550101", tags=["vip"])
    await _contact(api, email="b@example.com", tags=["vip"])
    await _contact(api, email="c@example.com")
    dynamic = await _segment(api, filter={"field": "tags", "op": "has", "value": "vip"})
    static = await _segment(api, kind="static")
    await api.post(f"/api/v1/segments/{static['id']}/members", json={"contact_ids": [a["id"]]})
    async with db.transaction() as session:
        tenant_id = api.tenant.id  # type: ignore[attr-defined]
        stmt = await segments.audience_select(session, tenant_id, segment_id=uuid.UUID(dynamic["id"]))
        rows = (await session.execute(stmt.where(Contact.email != "b@example.com"))).all()
        assert [(str(r.id), r.email, r.phone) for r in rows] == [(a["id"], "a@example.com", "+14155550101")]
        members = await session.execute(await segments.audience_select(session, tenant_id,
                                                                       segment_id=uuid.UUID(static["id"])))
        assert [r.email for r in members] == ["a@example.com"]
        everyone = await session.execute(await segments.audience_select(session, tenant_id))
        assert len(everyone.all()) == 3
        by_filter = await session.execute(await segments.audience_select(
            session, tenant_id, filter={"field": "email", "op": "starts_with", "value": "C"}))
        assert [r.email for r in by_filter] == ["c@example.com"]


async def test_deleting_a_segment_a_campaign_uses_is_409(api: httpx.AsyncClient) -> None:
    segment = await _segment(api, filter=VIP_FILTER)
    campaign = await api.post("/api/v1/campaigns", json={"name": "Launch", "channel": "email",
                                                        "segment_id": segment["id"]})
    assert campaign.status_code == 201, campaign.text
    response = await api.delete(f"/api/v1/segments/{segment['id']}")
    assert response.status_code == 409, response.text
    assert "campaign" in response.json()["detail"]
    assert (await api.get(f"/api/v1/segments/{segment['id']}")).status_code == 200
