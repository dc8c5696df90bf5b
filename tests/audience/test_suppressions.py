"""The suppression list: its API, and that no send path reaches a suppressed address."""

from __future__ import annotations

import io
import uuid
from datetime import UTC, datetime

import httpx
from sqlalchemy import select

from clarion.audience import service as audience
from clarion.campaign import claims
from clarion.db import Database
from clarion.kit.clock import clock, utcnow
from clarion.models import CampaignRecipient
from tests.campaign.helpers import CAMPAIGNS, add_recipients, new_campaign, new_contact
from tests.conftest import make_tenant

URL = "/api/v1/suppressions"


async def suppress(api: httpx.AsyncClient, channel: str, *addresses: str, **fields: object) -> dict:
    response = await api.post(URL, json={"channel": channel, "addresses": list(addresses), **fields})
    assert response.status_code == 200, response.text
    return response.json()


async def check(api: httpx.AsyncClient, channel: str, address: str) -> dict:
    response = await api.post(f"{URL}/check", json={"channel": channel, "address": address})
    assert response.status_code == 200, response.text
    return response.json()


def unique_email(name: str = "s") -> str:
    return f"{name}-{uuid.uuid4().hex[:8]}@example.com"


# --- the API ----------------------------------------------------------------------------------------------

async def test_addresses_are_normalised_deduplicated_and_invalid_ones_listed(api: httpx.AsyncClient) -> None:
    body = await suppress(api, "email", " Ada@Example.COM ", "ada@example.com", "not-an-email", note="asked by phone")
    assert body["added"] == 1 and body["already_suppressed"] == 0
    assert [i["address"] for i in body["invalid"]] == ["not-an-email"]
    assert "invalid email" in body["invalid"][0]["error"]
    [item] = body["items"]
    assert (item["channel"], item["address"], item["reason"], item["note"]) == (
        "email", "ada@example.com", "manual", "asked by phone")

    again = await suppress(api, "email", "ADA@example.com", "grace@example.com", reason="complained")
    assert again["added"] == 1 and again["already_suppressed"] == 1 and again["invalid"] == []
    by_address = {i["address"]: i for i in again["items"]}
    assert by_address["ada@example.com"] == item  # the first entry stays as it was
    assert by_address["grace@example.com"]["reason"] == "complained"


async def test_phones_are_stored_in_e164(api: httpx.AsyncClient) -> None:
    body = await suppress(api, "sms", "+44 20 7946 0958", "+442079460958", "030 901820")
    assert [i["address"] for i in body["items"]] == ["+442079460958"]
    assert [i["address"] for i in body["invalid"]] == ["030 901820"]  # no country code, no default region
    assert (await check(api, "sms", "+442079460958"))["suppressed"] is True
    assert (await check(api, "whatsapp", "+442079460958"))["suppressed"] is False  # per channel


async def test_only_invalid_addresses_is_422_by_address(api: httpx.AsyncClient) -> None:
    response = await api.post(URL, json={"channel": "email", "addresses": ["nope", "also@nope@x"]})
    assert response.status_code == 422
    assert [e["loc"] for e in response.json()["errors"]] == [["body", "addresses", 0], ["body", "addresses", 1]]
    bad_reason = await api.post(URL, json={"channel": "email", "addresses": ["a@example.com"], "reason": "whim"})
    assert bad_reason.status_code == 422
    empty = await api.post(URL, json={"channel": "email", "addresses": []})
    assert empty.status_code == 422
    assert (await api.get(URL)).json()["items"] == []


async def test_list_filters_and_keyset_pagination(api: httpx.AsyncClient) -> None:
    emails = [f"user{i}@example.com" for i in range(7)]
    await suppress(api, "email", *emails)
    await suppress(api, "sms", "+14155550123")
    seen: list[str] = []
    cursor = None
    while True:
        params = {"channel": "email", "limit": 3, **({"cursor": cursor} if cursor else {})}
        response = await api.get(URL, params=params)
        assert response.status_code == 200, response.text
        page = response.json()
        assert len(page["items"]) <= 3
        seen += [i["address"] for i in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == emails
    everything = (await api.get(URL)).json()["items"]
    assert len(everything) == 8
    found = (await api.get(URL, params={"q": "USER3"})).json()["items"]
    assert [i["address"] for i in found] == ["user3@example.com"]
    assert (await api.get(URL, params={"q": "%"})).json()["items"] == []  # wildcards match literally
    assert (await api.get(URL, params={"cursor": "garbage!"})).status_code == 422


async def test_check_reports_reason_and_normalises(api: httpx.AsyncClient) -> None:
    added = await suppress(api, "email", "gone@example.com", reason="bounced")
    result = await check(api, "email", "  GONE@example.com")
    assert result == {"channel": "email", "address": "gone@example.com", "suppressed": True, "reason": "bounced",
                      "suppression_id": added["items"][0]["id"]}
    clean = await check(api, "email", "here@example.com")
    assert (clean["suppressed"], clean["reason"]) == (False, None)
    invalid = await api.post(f"{URL}/check", json={"channel": "email", "address": "nope"})
    assert invalid.status_code == 422


async def test_delete_lifts_the_suppression(api: httpx.AsyncClient) -> None:
    [item] = (await suppress(api, "email", "back@example.com"))["items"]
    assert (await api.delete(f"{URL}/{item['id']}")).status_code == 204
    assert (await check(api, "email", "back@example.com"))["suppressed"] is False
    again = await api.delete(f"{URL}/{item['id']}")
    assert again.status_code == 404
    assert again.headers["content-type"].startswith("application/problem+json")


async def test_read_only_key_can_list_and_check_but_not_change(api: httpx.AsyncClient) -> None:
    [item] = (await suppress(api, "email", "ro@example.com"))["items"]
    ro = api.tenant.read_headers  # type: ignore[attr-defined]
    assert (await api.get(URL, headers=ro)).status_code == 200
    assert (await api.post(f"{URL}/check", json={"channel": "email", "address": "ro@example.com"},
                           headers=ro)).json()["suppressed"] is True
    assert (await api.post(URL, json={"channel": "email", "addresses": ["x@example.com"]}, headers=ro)).status_code == 403
    assert (await api.delete(f"{URL}/{item['id']}", headers=ro)).status_code == 403


async def test_another_tenants_suppressions_are_invisible(api: httpx.AsyncClient, db: Database) -> None:
    [item] = (await suppress(api, "email", "mine@example.com"))["items"]
    other = (await make_tenant(db, "Other")).headers
    assert (await api.delete(f"{URL}/{item['id']}", headers=other)).status_code == 404
    assert (await api.get(URL, headers=other)).json()["items"] == []
    theirs = await api.post(f"{URL}/check", json={"channel": "email", "address": "mine@example.com"}, headers=other)
    assert theirs.json()["suppressed"] is False
    # The same address may be on both lists, independently.
    added = await api.post(URL, json={"channel": "email", "addresses": ["mine@example.com"]}, headers=other)
    assert added.json()["added"] == 1
    assert (await check(api, "email", "mine@example.com"))["suppression_id"] == item["id"]


# --- enforcement ------------------------------------------------------------------------------------------

async def test_add_recipients_leaves_suppressed_addresses_out(api: httpx.AsyncClient) -> None:
    emails = [unique_email(f"r{i}") for i in range(3)]
    for email in emails:
        await new_contact(api, email=email)
    await suppress(api, "email", emails[1].upper())
    campaign = await new_campaign(api)
    response = await add_recipients(api, campaign["id"], {"emails": emails})
    assert response.status_code == 200, response.text
    body = response.json()
    assert (body["recipients_added"], body["skipped_unsubscribed"]) == (2, 1)


async def test_sms_suppression_matches_the_contacts_phone(api: httpx.AsyncClient) -> None:
    await new_contact(api, phone="+14155550123")
    await new_contact(api, phone="+14155550124")
    await suppress(api, "sms", "+1 415 555 0124")
    campaign = await new_campaign(api, channel="sms")
    response = await add_recipients(api, campaign["id"], {"phone_numbers": ["+14155550123", "+14155550124"]})
    assert response.status_code == 200, response.text
    assert (response.json()["recipients_added"], response.json()["skipped_unsubscribed"]) == (1, 1)


async def test_an_address_suppressed_after_planning_is_skipped_at_claim(api: httpx.AsyncClient, db: Database) -> None:
    clock.freeze(datetime(2025, 1, 6, 10, 0, tzinfo=UTC))
    emails = [unique_email(f"c{i}") for i in range(3)]
    for email in emails:
        await new_contact(api, email=email)
    campaign = await new_campaign(api)
    added = await add_recipients(api, campaign["id"], {"emails": emails})
    assert added.json()["recipients_added"] == 3, added.text
    await suppress(api, "email", emails[2], reason="complained")
    started = await api.post(f"{CAMPAIGNS}/{campaign['id']}/start")
    assert started.status_code == 200, started.text

    campaign_id = uuid.UUID(campaign["id"])
    async with db.transaction() as session:
        claimed = await claims.claim_due(session, now=utcnow(), limit=10, lease_owner="w", lease_seconds=60,
                                          campaign_id=campaign_id)
    assert sorted(c.email for c in claimed) == sorted(emails[:2])
    async with db.transaction() as session:
        rows = (await session.execute(select(CampaignRecipient).where(
            CampaignRecipient.campaign_id == campaign_id))).scalars().all()
    by_email = {r.email: r for r in rows}
    skipped = by_email[emails[2]]
    assert skipped.status == "skipped"
    # The reason text is campaign.sending's; a suppressed address reads as no longer reachable by consent.
    assert skipped.failure_reason is not None
    assert "suppress" in skipped.failure_reason or skipped.failure_reason == "no longer subscribed to email"
    assert {by_email[e].status for e in emails[:2]} == {"sending"}


# --- automatic entries ------------------------------------------------------------------------------------

async def test_patching_a_contact_to_bounced_suppresses_its_address(api: httpx.AsyncClient) -> None:
    contact = await new_contact(api, email="Bouncy@Example.com", phone="+14155550199")
    response = await api.patch(f"/api/v1/contacts/{contact['id']}", json={"subscriptions": {"email": "bounced"}})
    assert response.status_code == 200, response.text
    result = await check(api, "email", "bouncy@example.com")
    assert (result["suppressed"], result["reason"]) == (True, "bounced")
    assert (await check(api, "sms", "+14155550199"))["suppressed"] is False  # only the channel that bounced

    # Resubscribing changes the contact's consent, never the suppression list.
    await api.patch(f"/api/v1/contacts/{contact['id']}", json={"subscriptions": {"email": "subscribed"}})
    assert (await check(api, "email", "bouncy@example.com"))["suppressed"] is True


async def test_unsubscribing_does_not_suppress_but_a_complaint_does(api: httpx.AsyncClient, db: Database) -> None:
    contact = await new_contact(api, email="leaver@example.com", phone="+14155550188")
    await api.patch(f"/api/v1/contacts/{contact['id']}", json={"subscriptions": {"email": "unsubscribed"}})
    assert (await check(api, "email", "leaver@example.com"))["suppressed"] is False
    async with db.transaction() as session:
        await audience.set_subscription(session, api.tenant.id, uuid.UUID(contact["id"]),  # type: ignore[attr-defined]
                                        "sms", "complained", "webhook")
    result = await check(api, "sms", "+14155550188")
    assert (result["suppressed"], result["reason"]) == (True, "complained")
    [entry] = (await api.get(URL, params={"channel": "sms"})).json()["items"]
    assert contact["id"] in entry["note"]


async def test_a_bounced_contact_deleted_and_reimported_stays_excluded(api: httpx.AsyncClient) -> None:
    email = unique_email("phoenix")
    contact = await new_contact(api, email=email)
    await api.patch(f"/api/v1/contacts/{contact['id']}", json={"subscriptions": {"email": "bounced"}})
    assert (await api.delete(f"/api/v1/contacts/{contact['id']}")).status_code == 204
    assert (await check(api, "email", email))["suppressed"] is True

    csv = f"email,first_name\n{email},Again\n"
    imported = await api.post("/api/v1/contacts/import",
                              files={"file": ("c.csv", io.BytesIO(csv.encode()), "text/csv")})
    assert imported.status_code == 200 and imported.json()["created"] == 1, imported.text
    again = (await api.get("/api/v1/contacts", params={"q": email})).json()["items"][0]
    assert again["subscriptions"]["email"]["status"] == "subscribed"  # a fresh contact, fresh consent …

    campaign = await new_campaign(api)
    response = await add_recipients(api, campaign["id"], {"emails": [email]})
    assert response.status_code == 200, response.text
    assert (response.json()["recipients_added"], response.json()["skipped_unsubscribed"]) == (0, 1)  # … still out
