from __future__ import annotations

import httpx


async def test_create_normalises_and_defaults_subscriptions(api: httpx.AsyncClient) -> None:
    response = await api.post("/api/v1/contacts", json={
        "email": " Ada.Lovelace@Example.COM ", "phone": "+44 20 7946 0958", "first_name": "Ada",
        "timezone": "Europe/London", "locale": "en_GB", "tags": ["vip", "vip", " math "],
        "attributes": {"tier": "premium"}, "subscriptions": {"whatsapp": "unsubscribed"}})
    assert response.status_code == 201, response.text
    body = response.json()
    assert body["email"] == "ada.lovelace@example.com"
    assert body["phone"] == "+442079460958"
    assert body["locale"] == "en-GB"
    assert body["tags"] == ["vip", "math"]
    subs = {ch: s["status"] for ch, s in body["subscriptions"].items()}
    assert subs == {"email": "subscribed", "sms": "subscribed", "whatsapp": "unsubscribed"}


async def test_invalid_fields_are_reported_together(api: httpx.AsyncClient) -> None:
    response = await api.post("/api/v1/contacts", json={
        "email": "not-an-email", "phone": "12", "timezone": "Mars/Olympus"})
    assert response.status_code == 422
    fields = {e["loc"][-1] for e in response.json()["errors"]}
    assert fields == {"email", "phone", "timezone"}


async def test_needs_email_or_phone(api: httpx.AsyncClient) -> None:
    response = await api.post("/api/v1/contacts", json={"first_name": "Nobody"})
    assert response.status_code == 422
    assert "email or a phone" in response.json()["detail"]


async def test_phone_without_country_code_needs_default_region(api: httpx.AsyncClient) -> None:
    rejected = await api.post("/api/v1/contacts", json={"phone": "030 901820"})
    assert rejected.status_code == 422
    assert "default region" in rejected.json()["detail"]
    await api.patch("/api/v1/tenant", json={"default_region": "DE"})
    accepted = await api.post("/api/v1/contacts", json={"phone": "030 901820"})
    assert accepted.status_code == 201
    assert accepted.json()["phone"] == "+4930901820"


async def test_duplicate_email_is_409(api: httpx.AsyncClient) -> None:
    assert (await api.post("/api/v1/contacts", json={"email": "a@example.com"})).status_code == 201
    response = await api.post("/api/v1/contacts", json={"email": "A@example.com"})
    assert response.status_code == 409
    assert "email" in response.json()["detail"]


async def test_patch_merges_attributes_and_changes_subscription(api: httpx.AsyncClient) -> None:
    contact = (await api.post("/api/v1/contacts", json={
        "email": "b@example.com", "attributes": {"city": "Berlin", "tier": "gold"}})).json()
    response = await api.patch(f"/api/v1/contacts/{contact['id']}", json={
        "attributes": {"tier": None, "score": 7}, "subscriptions": {"email": "unsubscribed"}})
    assert response.status_code == 200
    body = response.json()
    assert body["attributes"] == {"city": "Berlin", "score": 7}
    assert body["subscriptions"]["email"]["status"] == "unsubscribed"
    assert body["subscriptions"]["email"]["source"] == "api"


async def test_list_filters_and_cursor_pagination(api: httpx.AsyncClient) -> None:
    for i in range(7):
        await api.post("/api/v1/contacts", json={
            "email": f"user{i}@example.com", "first_name": f"User{i}", "tags": ["even"] if i % 2 == 0 else ["odd"],
            "subscriptions": {"email": "unsubscribed"} if i == 3 else {}})
    seen: list[str] = []
    cursor = None
    while True:
        params = {"limit": 3, **({"cursor": cursor} if cursor else {})}
        page = (await api.get("/api/v1/contacts", params=params)).json()
        seen += [c["email"] for c in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == [f"user{i}@example.com" for i in range(7)]
    evens = (await api.get("/api/v1/contacts", params={"tag": "even"})).json()["items"]
    assert {c["email"] for c in evens} == {f"user{i}@example.com" for i in (0, 2, 4, 6)}
    found = (await api.get("/api/v1/contacts", params={"q": "USER5"})).json()["items"]
    assert [c["email"] for c in found] == ["user5@example.com"]
    unsub = (await api.get("/api/v1/contacts", params={"subscription.email": "unsubscribed"})).json()["items"]
    assert [c["email"] for c in unsub] == ["user3@example.com"]
    assert (await api.get("/api/v1/contacts", params={"q": "%"})).json()["items"] == []


async def test_delete_then_404(api: httpx.AsyncClient) -> None:
    contact = (await api.post("/api/v1/contacts", json={"email": "gone@example.com"})).json()
    assert (await api.delete(f"/api/v1/contacts/{contact['id']}")).status_code == 204
    assert (await api.get(f"/api/v1/contacts/{contact['id']}")).status_code == 404


async def test_patch_to_a_taken_email_is_409_and_changes_nothing(api: httpx.AsyncClient) -> None:
    await api.post("/api/v1/contacts", json={"email": "taken@example.com"})
    other = (await api.post("/api/v1/contacts", json={"email": "mine@example.com"})).json()
    response = await api.patch(f"/api/v1/contacts/{other['id']}", json={"email": "Taken@example.com",
                                                                        "attributes": None})
    assert response.status_code == 409
    assert response.json()["errors"][0]["loc"] == ["body", "email"]
    assert (await api.get(f"/api/v1/contacts/{other['id']}")).json()["email"] == "mine@example.com"
