"""A provider's opt-out report (audience.unsubscribe_contacts, set-based) follows the same rule as a person's STOP
keyword: it replaces a subscription (or no consent yet), never a bounce or a complaint."""

from __future__ import annotations

import uuid

import httpx

from clarion.audience import service as audience
from clarion.db import Database


async def test_an_opt_out_replaces_subscribed_and_no_consent_but_not_bounced_or_complained(
        api: httpx.AsyncClient, db: Database) -> None:
    given = {"default": None, "subscribed": "subscribed", "unsubscribed": "unsubscribed", "bounced": "bounced",
             "complained": "complained"}
    ids: dict[str, str] = {}
    for i, (label, status) in enumerate(given.items()):
        body: dict = {"phone": f"+1415555{i:04d}"}  # type: ignore[type-arg]
        if status is not None:
            body["subscriptions"] = {"sms": status}
        created = await api.post("/api/v1/contacts", json=body)
        assert created.status_code == 201, created.text
        ids[label] = created.json()["id"]
    async with db.transaction() as session:
        changed = await audience.unsubscribe_contacts(session, api.tenant.id,  # type: ignore[attr-defined]
                                                      [uuid.UUID(i) for i in ids.values()], "sms", "twilio:21610")
    assert sorted(map(str, changed)) == sorted([ids["default"], ids["subscribed"]])
    after = {label: (await api.get(f"/api/v1/contacts/{cid}")).json()["subscriptions"]["sms"]
             for label, cid in ids.items()}
    assert {label: s["status"] for label, s in after.items()} == {
        "default": "unsubscribed", "subscribed": "unsubscribed", "unsubscribed": "unsubscribed",
        "bounced": "bounced", "complained": "complained"}
    assert after["subscribed"]["source"] == "twilio:21610" and after["bounced"]["source"] != "twilio:21610"
