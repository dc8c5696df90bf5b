from __future__ import annotations

import uuid
from typing import Any

import httpx

from clarion.db import Database
from clarion.models import Campaign
from tests.conftest import make_tenant

EMAIL = {"name": "Welcome", "channel": "email", "subject": "Hi {{ contact.first_name }}",
         "body_html": "<p>Hello {{ contact.first_name }}</p>", "variables": {"promo": "WELCOME10"}}
WHATSAPP = {"name": "Summer sale", "channel": "whatsapp", "whatsapp": {
    "name": "summer_sale_promo", "language_code": "en_US", "components": [
        {"type": "header", "parameters": [{"type": "image", "image": {"link": "https://example.com/sale.jpg"}}]},
        {"type": "body", "parameters": [{"type": "text", "text": "{{ contact.first_name }}"},
                                        {"type": "text", "text": "30%"}]}]}}


async def create(api: httpx.AsyncClient, body: dict[str, Any]) -> dict[str, Any]:
    response = await api.post("/api/v1/templates", json=body)
    assert response.status_code == 201, response.text
    return response.json()


async def test_create_read_update_delete(api: httpx.AsyncClient) -> None:
    created = await create(api, EMAIL | {"description": "first mail", "thumbnail_url": "https://x.io/t.png"})
    assert created["subject"] == "Hi {{ contact.first_name }}"
    assert created["variables"] == {"promo": "WELCOME10"}
    assert created["is_active"] is True and created["is_default"] is False
    assert created["whatsapp"] is None

    fetched = await api.get(f"/api/v1/templates/{created['id']}")
    assert fetched.status_code == 200 and fetched.json() == created

    updated = await api.put(f"/api/v1/templates/{created['id']}", json={"name": "Welcome v2", "is_active": False})
    assert updated.status_code == 200, updated.text
    assert updated.json()["name"] == "Welcome v2" and updated.json()["is_active"] is False
    assert updated.json()["subject"] == EMAIL["subject"]

    assert (await api.delete(f"/api/v1/templates/{created['id']}")).status_code == 204
    assert (await api.get(f"/api/v1/templates/{created['id']}")).status_code == 404


async def test_whatsapp_template_round_trips_components(api: httpx.AsyncClient) -> None:
    created = await create(api, WHATSAPP)
    assert created["whatsapp"]["name"] == "summer_sale_promo"
    assert created["whatsapp"]["language_code"] == "en_US"
    body = created["whatsapp"]["components"][1]
    assert body["parameters"][0] == {"type": "text", "text": "{{ contact.first_name }}"}
    header = created["whatsapp"]["components"][0]
    assert header["parameters"][0]["image"] == {"link": "https://example.com/sale.jpg"}


async def test_channel_requirements(api: httpx.AsyncClient) -> None:
    no_subject = await api.post("/api/v1/templates", json={"name": "x", "channel": "email", "body_text": "hi"})
    assert no_subject.status_code == 422
    assert ["body", "subject"] in [e["loc"] for e in no_subject.json()["errors"]]

    no_body = await api.post("/api/v1/templates", json={"name": "x", "channel": "email", "subject": "s"})
    assert no_body.status_code == 422
    assert "body_html or body_text" in no_body.json()["detail"]

    for channel in ("sms", "telegram", "push"):
        response = await api.post("/api/v1/templates", json={"name": "x", "channel": channel, "body_html": "<p/>"})
        assert response.status_code == 422
        assert response.json()["errors"][0]["loc"] == ["body", "body_text"]

    no_provider = await api.post("/api/v1/templates", json={"name": "x", "channel": "whatsapp"})
    assert no_provider.status_code == 422
    assert "whatsapp.name" in no_provider.json()["detail"]

    wrong_channel = await api.post("/api/v1/templates", json={
        "name": "x", "channel": "sms", "body_text": "hi", "whatsapp": WHATSAPP["whatsapp"]})
    assert wrong_channel.status_code == 422
    assert "only to channel whatsapp" in wrong_channel.json()["detail"]

    bad_channel = await api.post("/api/v1/templates", json={"name": "x", "channel": "fax", "body_text": "hi"})
    assert bad_channel.status_code == 422


async def test_update_revalidates_the_result(api: httpx.AsyncClient) -> None:
    created = await create(api, EMAIL)
    response = await api.put(f"/api/v1/templates/{created['id']}", json={"subject": ""})
    assert response.status_code == 422
    assert "subject" in response.json()["detail"]
    response = await api.put(f"/api/v1/templates/{created['id']}", json={"name": None})
    assert response.status_code == 422


async def test_liquid_syntax_error_names_field_and_line(api: httpx.AsyncClient) -> None:
    response = await api.post("/api/v1/templates", json=EMAIL | {
        "body_html": "<p>Hello</p>\n<p>{{ contact.first_name | }}</p>"})
    assert response.status_code == 422
    error = response.json()["errors"][0]
    assert error["loc"] == ["body", "body_html"]
    assert error["msg"].startswith("body_html line 2:")

    unclosed = await api.post("/api/v1/templates", json=EMAIL | {"subject": "{% if contact.first_name %}Hi"})
    assert unclosed.status_code == 422
    assert "subject line 1" in unclosed.json()["detail"] and "endif" in unclosed.json()["detail"]

    whatsapp = {"name": "w", "language_code": "en", "components": [
        {"type": "body", "parameters": [{"type": "text", "text": "{{ oops"}]}]}
    response = await api.post("/api/v1/templates", json={"name": "x", "channel": "whatsapp", "whatsapp": whatsapp})
    assert response.status_code == 422
    assert response.json()["errors"][0]["loc"] == ["body", "whatsapp", "components", 0, "parameters", 0, "text"]


async def test_include_and_render_are_refused_at_save(api: httpx.AsyncClient) -> None:
    for source in ("{% include 'secrets' %}", "{% render 'secrets' %}"):
        response = await api.post("/api/v1/templates", json={"name": "x", "channel": "sms", "body_text": source})
        assert response.status_code == 422
        assert "unexpected tag" in response.json()["detail"]


async def test_variable_names_are_checked(api: httpx.AsyncClient) -> None:
    response = await api.post("/api/v1/templates", json=EMAIL | {"variables": {"contact": {}, "bad name": 1}})
    assert response.status_code == 422
    assert {tuple(e["loc"]) for e in response.json()["errors"]} == {
        ("body", "variables", "contact"), ("body", "variables", "bad name")}


async def test_list_filters_and_pagination(api: httpx.AsyncClient) -> None:
    for i in range(5):
        await create(api, EMAIL | {"name": f"Mail {i}", "is_active": i != 0})
    await create(api, {"name": "Text 100%_off", "channel": "sms", "body_text": "Hi"})
    seen: list[str] = []
    cursor = None
    while True:
        page = (await api.get("/api/v1/templates", params={"limit": 2, **({"cursor": cursor} if cursor else {})}))
        assert page.status_code == 200
        seen += [t["name"] for t in page.json()["items"]]
        cursor = page.json()["next_cursor"]
        if cursor is None:
            break
    assert seen == [f"Mail {i}" for i in range(5)] + ["Text 100%_off"]

    sms = (await api.get("/api/v1/templates", params={"channel": "sms"})).json()["items"]
    assert [t["name"] for t in sms] == ["Text 100%_off"]
    inactive = (await api.get("/api/v1/templates", params={"is_active": "false"})).json()["items"]
    assert [t["name"] for t in inactive] == ["Mail 0"]
    named = (await api.get("/api/v1/templates", params={"q": "MAIL 3"})).json()["items"]
    assert [t["name"] for t in named] == ["Mail 3"]
    wildcard = (await api.get("/api/v1/templates", params={"q": "%_"})).json()["items"]
    assert [t["name"] for t in wildcard] == ["Text 100%_off"]


async def test_one_default_per_channel(api: httpx.AsyncClient) -> None:
    first = await create(api, EMAIL | {"is_default": True})
    second = await create(api, EMAIL | {"name": "Other", "is_default": True})
    sms = await create(api, {"name": "s", "channel": "sms", "body_text": "Hi", "is_default": True})
    assert (await api.get(f"/api/v1/templates/{first['id']}")).json()["is_default"] is False
    assert (await api.get(f"/api/v1/templates/{second['id']}")).json()["is_default"] is True
    assert (await api.get(f"/api/v1/templates/{sms['id']}")).json()["is_default"] is True


async def test_read_only_key_cannot_write(api: httpx.AsyncClient) -> None:
    response = await api.post("/api/v1/templates", json=EMAIL, headers=api.tenant.read_headers)  # type: ignore[attr-defined]
    assert response.status_code == 403


async def test_deleting_a_template_a_campaign_uses_is_409(api: httpx.AsyncClient, db: Database) -> None:
    template = await create(api, EMAIL)
    async with db.transaction() as session:
        session.add(Campaign(tenant_id=api.tenant.id, name="Uses it", channel="email",  # type: ignore[attr-defined]
                             template_id=uuid.UUID(template["id"])))
    response = await api.delete(f"/api/v1/templates/{template['id']}")
    assert response.status_code == 409
    assert "used by a campaign" in response.json()["detail"]
    assert (await api.get(f"/api/v1/templates/{template['id']}")).status_code == 200


async def test_other_tenant_gets_404_everywhere(api: httpx.AsyncClient, db: Database) -> None:
    template = await create(api, EMAIL)
    other = await make_tenant(db, "Other")
    headers = other.headers
    url = f"/api/v1/templates/{template['id']}"
    assert (await api.get(url, headers=headers)).status_code == 404
    assert (await api.put(url, json={"name": "stolen"}, headers=headers)).status_code == 404
    assert (await api.delete(url, headers=headers)).status_code == 404
    preview = await api.post(f"{url}/preview", json={"sample": {"first_name": "Eve"}}, headers=headers)
    assert preview.status_code == 404
    listed = (await api.get("/api/v1/templates", headers=headers)).json()["items"]
    assert listed == []
    assert (await api.get(url)).json()["name"] == "Welcome"


async def test_preview_with_another_tenants_contact_is_404(api: httpx.AsyncClient, db: Database) -> None:
    template = await create(api, EMAIL)
    other = await make_tenant(db, "Other")
    contact = (await api.post("/api/v1/contacts", json={"email": "x@example.com"}, headers=other.headers)).json()
    response = await api.post(f"/api/v1/templates/{template['id']}/preview", json={"contact_id": contact["id"]})
    assert response.status_code == 404
