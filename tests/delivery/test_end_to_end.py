"""The send pipeline end to end, on both databases: 1,000 contacts, a daily limit that spreads the campaign over
three days (the clock is frozen and moved a day at a time), a real SMTP server receiving, DKIM, a tracked click
through the app and an RFC 8058 one-click unsubscribe that the next day's batch honours."""

from __future__ import annotations

import base64
import re
from collections import Counter
from datetime import UTC, datetime, timedelta
from email import message_from_bytes, policy
from typing import Any

import dkim
import httpx
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from clarion.campaign import sending
from clarion.config import Settings
from clarion.db import Database
from clarion.kit import tracking_urls
from clarion.kit.clock import clock, utcnow
from clarion.tracking.recorder import recorder_for
from tests.delivery.helpers import campaign_row, email_template, import_emails, recipients, smtp_channel
from tests.delivery.smtp_server import RecordingHandler, smtp_server

CONTACTS = 1000
DAILY_LIMIT = 400
DOMAIN, SELECTOR = "shop.example", "mail2031"
BROWSER = "Mozilla/5.0 (Macintosh; Intel Mac OS X 14_4) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.4"


def dkim_key() -> tuple[str, bytes]:
    """(private key PEM, the TXT record a DNS lookup of selector._domainkey.domain would return)."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()
    public = key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return pem, b"v=DKIM1; k=rsa; p=" + base64.b64encode(public)


def signed_headers(raw: bytes) -> list[str]:
    head = raw.split(b"\r\n\r\n", 1)[0].decode()
    signature = re.search(
        r"^DKIM-Signature:(.*?)(?=^\S)", head + "\r\nX: y", re.MULTILINE | re.DOTALL | re.IGNORECASE
    )
    assert signature, "the message is not DKIM-signed"
    tags = dict(
        part.strip().split("=", 1) for part in re.sub(r"\s+", "", signature.group(1)).split(";") if part
    )
    return tags["h"].lower().split(":")


async def process_day(api: httpx.AsyncClient) -> dict[str, Any]:
    response = await api.post("/api/v1/process-daily")
    assert response.status_code == 200, response.text
    return dict(response.json())


async def test_a_campaign_over_three_days_arrives_once_each_signed_tracked_and_unsubscribable(
    api: httpx.AsyncClient, db: Database, settings: Settings, app: Any
) -> None:
    clock.freeze(datetime(2031, 3, 4, 8, 0, tzinfo=UTC))
    try:
        await _run(api, db, settings, app)
    finally:
        clock.reset()


async def _run(api: httpx.AsyncClient, db: Database, settings: Settings, app: Any) -> None:
    pem, txt_record = dkim_key()
    emails = [f"fan{i}@example.com" for i in range(CONTACTS)]
    csv = "email,first_name\n" + "".join(f"{e},Fan{i}\n" for i, e in enumerate(emails))
    assert (await import_emails(api, csv))["created"] == CONTACTS

    handler = RecordingHandler()
    with smtp_server(handler) as server:
        await smtp_channel(api, server.port, pool_size=4,
                           dkim={"domain": DOMAIN, "selector": SELECTOR, "private_key": pem})
        template_id = await email_template(
            api, subject="Spring deals for {{ contact.first_name }}",
            html='<p>Hi {{ contact.first_name }}</p><p><a href="https://shop.example/spring">Shop</a></p>'
                 '<p><a href="{{ unsubscribe_url }}">Unsubscribe</a></p>')
        created = await api.post(
            "/api/v1/campaigns",
            json={
                "name": "Spring",
                "channel": "email",
                "template_id": template_id,
                "daily_send_limit": DAILY_LIMIT,
                "from_email": f"news@{DOMAIN}",
                "from_name": "Shop",
            },
        )
        assert created.status_code == 201, created.text
        campaign_id = created.json()["id"]
        added = await api.post(f"/api/v1/campaigns/{campaign_id}/recipients", json={"emails": emails})
        assert added.json()["recipients_added"] == CONTACTS, added.text
        activated = await api.post(
            f"/api/v1/campaigns/{campaign_id}/activate", params={"start_date": clock.today().isoformat()}
        )
        assert activated.status_code == 200, activated.text
        assert activated.json()["estimated_days"] == 3

        # Day 1: exactly the daily limit goes out.
        assert (await process_day(api))["messages_sent"] == DAILY_LIMIT
        assert len(handler.received) == DAILY_LIMIT

        # DKIM: the signature verifies, and both RFC 8058 headers are covered by it.
        first = handler.received[0].content

        def dns(name: bytes, timeout: int = 5) -> bytes:
            return txt_record if name == f"{SELECTOR}._domainkey.{DOMAIN}.".encode() else b""

        for received in handler.received[:25]:
            assert dkim.verify(received.content, dnsfunc=dns)
        assert {"list-unsubscribe", "list-unsubscribe-post"} <= set(signed_headers(first))

        # A click through the app: 302 to the stored URL, counted once the event is recorded.
        html = message_from_bytes(first, policy=policy.default).get_body(("html",)).get_content()
        click = re.search(r'href="(http://clarion\.test(/t/c/[^"]+))"', html)
        assert click, html
        clock.advance(
            timedelta(minutes=7)
        )  # a person reads mail minutes later, not within a scanner's seconds
        redirect = await api.get(click.group(2), headers={"User-Agent": BROWSER})
        assert redirect.status_code == 302 and redirect.headers["location"] == "https://shop.example/spring"
        await recorder_for(app).flush()  # the endpoint answers first and writes its events in batches
        campaign = await campaign_row(db, campaign_id)
        assert campaign.clicked == 1 and campaign.clicked_total == 1

        # One-click unsubscribe (RFC 8058) of a recipient due tomorrow, with the URL its message carries.
        rows = await recipients(db, campaign_id)
        tomorrow = clock.today() + timedelta(days=1)
        leaving = next(r for r in rows if r.status == "pending" and r.scheduled_send_date == tomorrow)
        url = tracking_urls.unsubscribe_url(settings.base_url, settings.resolved_secret_key(), leaving.id)
        one_click = await api.post(
            url.removeprefix(settings.base_url),
            content=b"List-Unsubscribe=One-Click",
            headers={"Content-Type": "application/x-www-form-urlencoded", "Authorization": ""},
        )
        assert one_click.status_code in (200, 202, 204), one_click.text
        contact = await api.get(f"/api/v1/contacts/{leaving.contact_id}")
        assert contact.json()["subscriptions"]["email"]["status"] == "unsubscribed", contact.text

        # Days 2 and 3: the rest, without the contact who left.
        clock.advance(timedelta(days=1))
        assert (await process_day(api))["messages_sent"] == DAILY_LIMIT - 1
        clock.advance(timedelta(days=1))
        assert (await process_day(api))["messages_sent"] == CONTACTS - 2 * DAILY_LIMIT
        clock.advance(timedelta(days=1))
        assert (await process_day(api))["messages_sent"] == 0

    arrivals = Counter(r.rcpt_tos[0] for r in handler.received)
    assert set(arrivals.values()) == {1}, "a message arrived twice"
    assert set(arrivals) == set(emails) - {leaving.email}
    assert len({message_from_bytes(r.content)["Message-ID"] for r in handler.received}) == CONTACTS - 1

    rows = await recipients(db, campaign_id)
    statuses = Counter(r.status for r in rows)
    assert statuses["skipped"] == 1 and next(r for r in rows if r.id == leaving.id).status == "skipped"
    assert statuses["sent"] + statuses["clicked"] == CONTACTS - 1 and statuses["pending"] == 0
    async with db.transaction() as session:
        await sending.complete_finished_campaigns(session, now=utcnow())
    campaign = await campaign_row(db, campaign_id)
    assert campaign.status == "completed" and campaign.completed_at is not None
    assert (campaign.sent, campaign.skipped, campaign.pending) == (CONTACTS - 1, 1, 0)
