"""Unsubscribe links: a confirmation page that changes nothing, and the POST (RFC 8058 one-click too)."""

from __future__ import annotations

import uuid

import httpx

from clarion.campaign import claims
from clarion.kit.clock import utcnow
from tests.tracking.helpers import events, sent_campaign, unsubscribe_path


async def _email_consent(api: httpx.AsyncClient, contact_id: str) -> str:
    contact = (await api.get(f"/api/v1/contacts/{contact_id}")).json()
    return contact["subscriptions"]["email"]["status"]


async def test_the_page_asks_and_changes_nothing(api, db, app) -> None:
    [ann] = await sent_campaign(api, db, ["ann@example.com"])
    page = await api.get(unsubscribe_path(ann.id))
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert '<form method="post"' in page.text and unsubscribe_path(ann.id) in page.text
    assert "ann@example.com" not in page.text and "@example.com" in page.text  # masked address
    assert await _email_consent(api, ann.contact_id) == "subscribed"
    assert await events(db, ann.id, "unsubscribed") == []
    assert (await api.get(unsubscribe_path(ann.id)[:-3] + "AAA")).status_code == 404


async def test_one_click_post_without_cookies_unsubscribes_once_and_the_next_claim_leaves_them_out(
        api, db, app) -> None:
    [ann] = await sent_campaign(api, db, ["ann@example.com"])
    # A mail provider's one-click POST: no cookies, no auth, no CSRF token.
    bare = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://clarion.test")
    async with bare:
        for _ in range(2):
            response = await bare.post(unsubscribe_path(ann.id), content=b"List-Unsubscribe=One-Click",
                                       headers={"Content-Type": "application/x-www-form-urlencoded"})
            assert response.status_code == 200, response.text
        assert (await bare.post("/t/u/forged.token", content=b"List-Unsubscribe=One-Click")).status_code == 404
    assert await _email_consent(api, ann.contact_id) == "unsubscribed"
    [event] = await events(db, ann.id, "unsubscribed")  # idempotent: the replay recorded nothing
    assert event.metadata_["one_click"] is True
    page = await api.get(unsubscribe_path(ann.id))
    assert page.status_code == 200 and "<form" not in page.text

    # A new campaign for ann and bob: the claim sends only to bob.
    bob = (await api.post("/api/v1/contacts", json={"email": "bob@example.com"})).json()
    second = (await api.post("/api/v1/campaigns", json={"name": "Autumn", "channel": "email"})).json()
    added = await api.post(f"/api/v1/campaigns/{second['id']}/recipients",
                           json={"contact_ids": [ann.contact_id, bob["id"]]})
    assert added.status_code == 200, added.text
    assert (await api.post(f"/api/v1/campaigns/{second['id']}/start")).status_code == 200
    async with db.transaction() as session:
        claimed = await claims.claim_due(session, now=utcnow(), limit=10, lease_owner="t-unsub",
                                          lease_seconds=60, campaign_id=uuid.UUID(second["id"]))
    assert [c.contact_id for c in claimed] == [uuid.UUID(bob["id"])]


async def test_the_form_post_from_the_page_unsubscribes(api, db, app) -> None:
    [ann] = await sent_campaign(api, db, ["ann@example.com"])
    response = await api.post(unsubscribe_path(ann.id), data={})
    assert response.status_code == 200 and "unsubscribed" in response.text
    assert await _email_consent(api, ann.contact_id) == "unsubscribed"
    [event] = await events(db, ann.id, "unsubscribed")
    assert event.metadata_["one_click"] is False
