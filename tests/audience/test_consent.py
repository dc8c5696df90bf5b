"""Default consent is stored on the contact, not as rows, and reads, filters and sends exactly as rows did."""

from __future__ import annotations

import uuid
from datetime import datetime

import httpx
from sqlalchemy import text

from clarion.db import Database
from clarion.kit.clock import clock
from tests.campaign.helpers import add_recipients, new_campaign


async def upload(api: httpx.AsyncClient, csv_text: str) -> dict:
    response = await api.post("/api/v1/contacts/import", files={"file": ("c.csv", csv_text.encode(), "text/csv")})
    assert response.status_code == 200, response.text
    return response.json()


async def contact_by_email(api: httpx.AsyncClient, email: str) -> dict:
    page = (await api.get("/api/v1/contacts", params={"q": email})).json()["items"]
    [found] = [c for c in page if c["email"] == email]
    return found


async def consent_rows(db: Database, contact_id: str) -> list[tuple[str, str, str]]:
    async with db.transaction() as session:
        rows = await session.execute(text("SELECT channel, status, source FROM contact_subscriptions "
                                          "WHERE contact_id = :id ORDER BY channel"),
                                     {"id": uuid.UUID(contact_id).hex if db.dialect == "sqlite" else contact_id})
        return [tuple(row) for row in rows.all()]


def emails(page: list[dict]) -> set[str]:
    return {c["email"] for c in page}


async def test_new_contacts_read_subscribed_on_their_address_channels_without_a_row(api: httpx.AsyncClient,
                                                                                   db: Database) -> None:
    created = (await api.post("/api/v1/contacts", json={"email": "api@example.com", "phone": "+14155550140"})).json()
    await upload(api, "email,phone\nimported@example.com,+14155550141\nmail-only@example.com,\n")
    imported = await contact_by_email(api, "imported@example.com")
    mail_only = await contact_by_email(api, "mail-only@example.com")
    for contact, source in ((created, "api"), (imported, "import")):
        assert {ch: (s["status"], s["source"]) for ch, s in contact["subscriptions"].items()} == {
            ch: ("subscribed", source) for ch in ("email", "sms", "whatsapp")}
        assert {s["changed_at"] for s in contact["subscriptions"].values()} == {contact["created_at"]}
        assert await consent_rows(db, contact["id"]) == []
    assert set(mail_only["subscriptions"]) == {"email"}


async def test_a_phone_added_later_brings_no_sms_consent(api: httpx.AsyncClient) -> None:
    contact = (await api.post("/api/v1/contacts", json={"email": "later@example.com"})).json()
    patched = (await api.patch(f"/api/v1/contacts/{contact['id']}", json={"phone": "+14155550142"})).json()
    assert set(patched["subscriptions"]) == {"email"}
    subscribed_sms = (await api.get("/api/v1/contacts", params={"subscription.sms": "subscribed"})).json()["items"]
    assert "later@example.com" not in emails(subscribed_sms)
    preview = await api.post("/api/v1/segments/preview", json={"limit": 500, "filter": {
        "all": [{"field": "subscription.sms", "op": "exists", "value": False},
                {"field": "subscription.email", "op": "eq", "value": "subscribed"}]}})
    assert preview.status_code == 200, preview.text
    assert emails(preview.json()["items"]) == {"later@example.com"}


async def test_the_first_change_writes_a_row_that_decides_from_then_on(api: httpx.AsyncClient, db: Database) -> None:
    await upload(api, "email,phone\nchange@example.com,+14155550143\n")
    contact = await contact_by_email(api, "change@example.com")
    unsubscribed = (await api.patch(f"/api/v1/contacts/{contact['id']}",
                                    json={"subscriptions": {"email": "unsubscribed"}})).json()
    assert unsubscribed["subscriptions"]["email"]["status"] == "unsubscribed"
    assert unsubscribed["subscriptions"]["email"]["source"] == "api"
    assert unsubscribed["subscriptions"]["sms"] == contact["subscriptions"]["sms"]  # untouched: still the default
    assert await consent_rows(db, contact["id"]) == [("email", "unsubscribed", "api")]
    listed = (await api.get("/api/v1/contacts", params={"subscription.email": "unsubscribed"})).json()["items"]
    assert "change@example.com" in emails(listed)
    listed = (await api.get("/api/v1/contacts", params={"subscription.email": "subscribed"})).json()["items"]
    assert "change@example.com" not in emails(listed)

    again = (await api.patch(f"/api/v1/contacts/{contact['id']}",
                             json={"subscriptions": {"email": "subscribed"}})).json()
    assert again["subscriptions"]["email"]["status"] == "subscribed"
    assert datetime.fromisoformat(again["subscriptions"]["email"]["changed_at"]) > datetime.fromisoformat(
        contact["created_at"])
    assert await consent_rows(db, contact["id"]) == [("email", "subscribed", "api")]


async def test_subscribing_a_default_channel_again_changes_nothing(api: httpx.AsyncClient, db: Database) -> None:
    contact = (await api.post("/api/v1/contacts", json={"email": "same@example.com"})).json()
    clock.freeze(datetime.fromisoformat(contact["created_at"]).replace(year=2099))
    again = (await api.patch(f"/api/v1/contacts/{contact['id']}",
                             json={"subscriptions": {"email": "subscribed"}})).json()
    assert again["subscriptions"]["email"] == contact["subscriptions"]["email"]
    assert await consent_rows(db, contact["id"]) == []


async def test_a_channel_without_an_address_can_still_be_consented_explicitly(api: httpx.AsyncClient) -> None:
    contact = (await api.post("/api/v1/contacts", json={
        "email": "tg@example.com", "subscriptions": {"telegram": "subscribed", "sms": "unsubscribed"}})).json()
    assert {ch: s["status"] for ch, s in contact["subscriptions"].items()} == {
        "email": "subscribed", "sms": "unsubscribed", "telegram": "subscribed"}
    listed = (await api.get("/api/v1/contacts", params={"subscription.telegram": "subscribed"})).json()["items"]
    assert "tg@example.com" in emails(listed)


async def test_campaigns_reach_imported_contacts_until_they_unsubscribe(api: httpx.AsyncClient) -> None:
    addresses = [f"reach{i}-{uuid.uuid4().hex[:6]}@example.com" for i in range(4)]
    await upload(api, "email\n" + "\n".join(addresses) + "\n")
    leaver = await contact_by_email(api, addresses[1])
    await api.patch(f"/api/v1/contacts/{leaver['id']}", json={"subscriptions": {"email": "unsubscribed"}})
    sms_campaign = await new_campaign(api, channel="sms")
    none_by_sms = await add_recipients(api, sms_campaign["id"], {"emails": addresses})
    assert none_by_sms.json()["recipients_added"] == 0  # imported with an email only: no sms consent
    campaign = await new_campaign(api)
    response = await add_recipients(api, campaign["id"], {"emails": addresses})
    assert response.status_code == 200, response.text
    assert (response.json()["recipients_added"], response.json()["skipped_unsubscribed"]) == (3, 1)
