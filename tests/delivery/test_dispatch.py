"""The dispatcher on both databases: claims, renders, tracks, builds and sends through a real SMTP server or the
outbox, and records what happened. Dispatch here is scoped to the test's own campaigns (process-daily, or
Dispatcher.drain with campaign ids), so leftovers of other tests in the shared database are never touched."""

from __future__ import annotations

import re
import uuid
from typing import Any

import httpx

from clarion.config import Settings
from clarion.db import Database
from clarion.delivery.dispatch import Dispatcher, DispatchSettings
from tests.delivery.helpers import (
    CAMPAIGNS,
    campaign_row,
    email_template,
    parsed,
    people,
    recipients,
    running_campaign,
    smtp_channel,
)
from tests.delivery.smtp_server import RecordingHandler, smtp_server


async def test_process_daily_sends_every_due_message_through_smtp_once(
    api: httpx.AsyncClient, db: Database
) -> None:
    handler = RecordingHandler()
    with smtp_server(handler) as server:
        channel_id = await smtp_channel(api, server.port)
        template_id = await email_template(api)
        contacts = people(5)
        campaign_id = await running_campaign(
            api,
            contacts,
            template_id=template_id,
            from_email="news@shop.example",
            from_name="Shop News",
            reply_to="care@shop.example",
            channel_config_id=channel_id,
        )
        response = await api.post("/api/v1/process-daily")
        assert response.status_code == 200, response.text
        result = response.json()
        assert result["messages_sent"] == 5 and result["campaigns_processed"] == 1
        assert set(result) >= {"date", "campaigns_processed", "messages_sent"}
        again = (await api.post("/api/v1/process-daily")).json()
        assert again["messages_sent"] == 0  # nothing is sent twice

    assert len(handler.received) == 5
    messages = [parsed(r.content) for r in handler.received]
    assert sorted(str(m["To"]) for m in messages) == sorted(c["email"] for c in contacts)
    message_ids = {str(m["Message-ID"]) for m in messages}
    assert len(message_ids) == 5
    first = messages[0]
    assert (
        str(first["From"]) == "Shop News <news@shop.example>"
        and str(first["Reply-To"]) == "care@shop.example"
    )
    assert handler.received[0].mail_from == "news@shop.example"
    unsubscribe = str(first["List-Unsubscribe"])
    assert re.search(r"<http://clarion\.test/t/u/[A-Za-z0-9._-]+>", unsubscribe), unsubscribe
    assert "<mailto:care@shop.example?subject=unsubscribe%20" in unsubscribe
    assert str(first["List-Unsubscribe-Post"]) == "List-Unsubscribe=One-Click"
    assert first.get_content_type() == "multipart/alternative"
    html = first.get_body(("html",)).get_content()
    assert str(first["Subject"]).startswith("Hello Ann")
    assert "/t/c/" in html and "https://shop.example/sale" not in html  # tracked
    assert 'href="https://shop.example/private"' in html and "mailto:help@shop.example" in html  # left alone
    assert re.search(r'<img src="http://clarion\.test/t/o/[A-Za-z0-9._-]+\.gif"', html)

    rows = await recipients(db, campaign_id)
    assert {r.status for r in rows} == {"sent"}
    assert {r.provider_message_id for r in rows} == message_ids
    assert all(r.sent_at is not None for r in rows)
    campaign = await campaign_row(db, campaign_id)
    assert campaign.sent == 5 and campaign.pending == 0


async def test_process_daily_never_sends_another_tenants_campaign(
    api: httpx.AsyncClient, db: Database, app: Any
) -> None:
    from tests.conftest import make_tenant

    other = await make_tenant(db, "Other")
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://clarion.test", headers=other.headers
    ) as other_api:
        other_campaign = await running_campaign(
            other_api, people(3), template_id=await email_template(other_api)
        )
    mine = await running_campaign(api, people(2), template_id=await email_template(api))
    result = (await api.post("/api/v1/process-daily")).json()
    assert result["messages_sent"] == 2
    assert {r.status for r in await recipients(db, mine)} == {"sent"}
    assert {r.status for r in await recipients(db, other_campaign)} == {"pending"}
    # Without an email channel the tenant's mail went to the built-in outbox, listed for that tenant only.
    listed = (await api.get("/api/v1/outbox", params={"campaign_id": mine})).json()["items"]
    assert len(listed) == 2


async def test_a_message_that_cannot_render_fails_only_its_recipient(
    api: httpx.AsyncClient, db: Database
) -> None:
    template_id = await email_template(api, html="<p>See you in {{ contact.attributes.city }}</p>")
    contacts = people(3)
    contacts[1]["attributes"] = {"city": "Lyon"}
    contacts[0]["attributes"] = {"city": "Oslo"}
    campaign_id = await running_campaign(api, contacts, template_id=template_id)
    result = (await api.post("/api/v1/process-daily")).json()
    assert result["messages_sent"] == 2
    by_email = {r.email: r for r in await recipients(db, campaign_id)}
    failed = by_email[contacts[2]["email"]]
    assert failed.status == "failed" and "city" in (failed.failure_reason or "")
    assert by_email[contacts[0]["email"]].status == "sent"
    campaign = await campaign_row(db, campaign_id)
    assert campaign.sent == 2 and campaign.failed == 1


async def test_without_click_and_open_tracking_links_stay_as_written(
    api: httpx.AsyncClient, db: Database
) -> None:
    handler = RecordingHandler()
    with smtp_server(handler) as server:
        await smtp_channel(api, server.port)
        campaign_id = await running_campaign(
            api, people(1), template_id=await email_template(api), track_clicks=False, track_opens=False
        )
        assert (await api.post("/api/v1/process-daily")).json()["messages_sent"] == 1
    html = parsed(handler.received[0].content).get_body(("html",)).get_content()
    assert 'href="https://shop.example/sale?x=1&amp;y=2"' in html
    assert "/t/c/" not in html and "/t/o/" not in html
    assert {r.status for r in await recipients(db, campaign_id)} == {"sent"}


async def test_a_refused_recipient_is_retried_later_and_a_rejected_one_fails(
    api: httpx.AsyncClient, db: Database
) -> None:
    contacts = people(3)
    handler = RecordingHandler(
        rcpt_replies={
            contacts[0]["email"]: "451 4.7.1 greylisted",
            contacts[1]["email"]: "550 5.1.1 no such user",
        }
    )
    with smtp_server(handler) as server:
        await smtp_channel(api, server.port)
        campaign_id = await running_campaign(api, contacts, template_id=await email_template(api))
        assert (await api.post("/api/v1/process-daily")).json()["messages_sent"] == 1
    by_email = {r.email: r for r in await recipients(db, campaign_id)}
    greylisted, unknown = by_email[contacts[0]["email"]], by_email[contacts[1]["email"]]
    assert (
        greylisted.status == "pending"
        and greylisted.retry_count == 1
        and "451" in (greylisted.failure_reason or "")
    )
    assert greylisted.send_after is not None
    assert unknown.status == "failed" and "550" in (unknown.failure_reason or "")
    assert by_email[contacts[2]["email"]].status == "sent"


async def test_a_campaign_whose_channel_is_missing_pauses_and_keeps_its_recipients(
    api: httpx.AsyncClient, db: Database
) -> None:
    response = await api.post("/api/v1/templates", json={"name": "sms", "channel": "sms", "body_text": "Hi"})
    assert response.status_code == 201, response.text
    contacts = [{"phone": f"+4420794600{i:02d}", "first_name": "Sam"} for i in range(2)]
    for contact in contacts:
        assert (await api.post("/api/v1/contacts", json=contact)).status_code == 201
    campaign_id = (
        await api.post(
            CAMPAIGNS, json={"name": "Texts", "channel": "sms", "template_id": response.json()["id"]}
        )
    ).json()["id"]
    added = await api.post(
        f"{CAMPAIGNS}/{campaign_id}/recipients", json={"phone_numbers": [c["phone"] for c in contacts]}
    )
    assert added.json()["recipients_added"] == 2, added.text
    assert (await api.post(f"{CAMPAIGNS}/{campaign_id}/start")).status_code == 200

    assert (await api.post("/api/v1/process-daily")).json()["messages_sent"] == 0
    campaign = await campaign_row(db, campaign_id)
    assert campaign.status == "paused" and "sms" in (campaign.status_reason or "")
    assert {r.status for r in await recipients(db, campaign_id)} == {"pending"}


async def test_batches_reuse_one_smtp_pool_until_the_dispatcher_closes(
    api: httpx.AsyncClient, db: Database, settings: Settings
) -> None:
    handler = RecordingHandler()
    with smtp_server(handler) as server:
        await smtp_channel(api, server.port, pool_size=1)
        campaign_id = await running_campaign(api, people(6), template_id=await email_template(api))
        dispatcher = Dispatcher(db, settings, options=DispatchSettings(batch_size=2, chunk_size=1))
        try:
            report = await dispatcher.drain([uuid.UUID(campaign_id)])
        finally:
            await dispatcher.close()
    assert report.sent == 6 and report.claimed == 6
    assert len(handler.received) == 6
    assert len(handler.peers) == 1  # three batches, one connection


async def test_a_test_send_goes_to_the_given_addresses_and_touches_nothing(
    api: httpx.AsyncClient, db: Database
) -> None:
    handler = RecordingHandler()
    with smtp_server(handler) as server:
        await smtp_channel(api, server.port)
        campaign_id = await running_campaign(api, people(2), template_id=await email_template(api))
        before = await campaign_row(db, campaign_id)
        response = await api.post(
            f"{CAMPAIGNS}/{campaign_id}/test", json={"to": ["qa@shop.example", "boss@shop.example"]}
        )
        assert response.status_code == 200, response.text
    body = response.json()
    assert body["sent"] == 2 and body["contact_source"] == "recipient" and body["contact_id"]
    assert sorted(r.rcpt_tos[0] for r in handler.received) == ["boss@shop.example", "qa@shop.example"]
    message = parsed(handler.received[0].content)
    # Rendered for one of the campaign's own recipients (which one is the database's choice).
    chosen = (await api.get(f"/api/v1/contacts/{body['contact_id']}")).json()
    assert str(message["Subject"]) == f"[TEST] Hello {chosen['first_name']}"
    html = message.get_body(("html",)).get_content()
    assert "/t/c/" not in html and "/t/o/" not in html  # a test message is not tracked
    assert {r.status for r in await recipients(db, campaign_id)} == {"pending"}
    after = await campaign_row(db, campaign_id)
    assert (after.sent, after.pending) == (before.sent, before.pending)


async def test_a_test_send_without_recipients_uses_a_sample_and_the_outbox(api: httpx.AsyncClient) -> None:
    campaign_id = (
        await api.post(
            CAMPAIGNS, json={"name": "Draft", "channel": "email", "template_id": await email_template(api)}
        )
    ).json()["id"]
    response = await api.post(f"{CAMPAIGNS}/{campaign_id}/test", json={"to": ["qa@shop.example"]})
    assert response.status_code == 200, response.text
    assert response.json()["contact_source"] == "sample" and response.json()["provider"] == "outbox"
    listed = (await api.get("/api/v1/outbox", params={"campaign_id": campaign_id})).json()["items"]
    assert [(e["to"], e["subject"]) for e in listed] == [("qa@shop.example", "[TEST] Hello Sample")]


async def test_a_test_send_validates_its_addresses(api: httpx.AsyncClient) -> None:
    campaign_id = (
        await api.post(
            CAMPAIGNS, json={"name": "Draft", "channel": "email", "template_id": await email_template(api)}
        )
    ).json()["id"]
    too_many = await api.post(
        f"{CAMPAIGNS}/{campaign_id}/test", json={"to": [f"a{i}@x.example" for i in range(21)]}
    )
    assert too_many.status_code == 422
    bad = await api.post(f"{CAMPAIGNS}/{campaign_id}/test", json={"to": ["ok@x.example", "not an address"]})
    assert bad.status_code == 422 and bad.json()["errors"][0]["loc"] == ["body", "to", 1]
    missing = await api.post(f"{CAMPAIGNS}/{uuid.uuid4()}/test", json={"to": ["ok@x.example"]})
    assert missing.status_code == 404


async def test_cron_driven_process_daily_starts_sends_the_daily_quota_and_completes(
    api: httpx.AsyncClient, db: Database
) -> None:
    """Seed 002 without any worker: activate for tomorrow, then one process-daily call a day."""
    from datetime import UTC, datetime, timedelta

    from clarion.kit.clock import clock

    clock.freeze(datetime(2025, 1, 14, 9, tzinfo=UTC))
    contacts = people(5)
    for contact in contacts:
        assert (await api.post("/api/v1/contacts", json=contact)).status_code == 201
    created = await api.post(CAMPAIGNS, json={"name": "Cron", "channel": "email", "daily_send_limit": 2,
                                              "template_id": await email_template(api)})
    campaign_id = created.json()["id"]
    await api.post(f"{CAMPAIGNS}/{campaign_id}/recipients", json={"emails": [c["email"] for c in contacts]})
    activated = (await api.post(f"{CAMPAIGNS}/{campaign_id}/activate", params={"start_date": "2025-01-15"})).json()
    assert (activated["estimated_days"], activated["estimated_completion_date"]) == (3, "2025-01-17")

    assert (await api.post("/api/v1/process-daily")).json()["messages_sent"] == 0  # not yet its day
    assert (await campaign_row(db, campaign_id)).status == "scheduled"
    sent_per_day = []
    for _ in range(3):
        clock.advance(timedelta(days=1))
        sent_per_day.append((await api.post("/api/v1/process-daily")).json()["messages_sent"])
    assert sent_per_day == [2, 2, 1]
    campaign = await campaign_row(db, campaign_id)
    assert (campaign.status, campaign.sent, campaign.pending) == ("completed", 5, 0)
    assert campaign.completed_at is not None
