"""Provider webhooks through the real app on both databases: SMS sent through the Twilio sandbox by the real
dispatcher, then Twilio's signed status callbacks and inbound messages posted to /webhooks/twilio/..."""

from __future__ import annotations

import asyncio
import uuid
from datetime import timedelta
from urllib.parse import parse_qs

import httpx
from sqlalchemy import select

from clarion.config import Settings
from clarion.db import Database
from clarion.kit.clock import clock, utcnow
from clarion.models import CampaignEvent, Contact
from clarion.tracking import webhooks_service
from clarion.worker import registry
from tests.fakes.serving import serve_asgi
from tests.tracking.twilio_helpers import (
    INBOUND_PATH,
    STATUS_PATH,
    calls_of,
    campaign_of,
    post_signed,
    recipients_of,
    send_due,
    sms_campaign,
    sms_contacts,
    twilio_account,
)

TWIML = "application/xml"


async def _sent_campaign(api: httpx.AsyncClient, db: Database, settings: Settings, account, count: int = 2,  # type: ignore[no-untyped-def]
                         **fields):  # type: ignore[no-untyped-def]
    contacts = await sms_contacts(api, count)
    campaign_id = await sms_campaign(api, account, contacts, **fields)
    await send_due(db, settings, campaign_id)
    rows = await recipients_of(db, campaign_id)
    assert [r.status for r in rows] == ["sent"] * count
    assert all(r.provider_message_id and r.provider_message_id.startswith("SM") for r in rows)
    return campaign_id, rows, contacts


async def _consent(api: httpx.AsyncClient, contact_id: str, channel: str = "sms") -> dict:  # type: ignore[type-arg]
    contact = (await api.get(f"/api/v1/contacts/{contact_id}")).json()
    found = contact["subscriptions"]
    if isinstance(found, dict):
        return found.get(channel) or {}
    return next((s for s in found if s["channel"] == channel), {})


async def test_a_signed_delivery_status_moves_the_recipient_and_a_replay_changes_nothing(
        api: httpx.AsyncClient, client: httpx.AsyncClient, db: Database, settings: Settings) -> None:
    async with twilio_account(api) as account:
        campaign_id, rows, _ = await _sent_campaign(api, db, settings, account)
        call = account.status(rows[0].provider_message_id or "", "delivered")
        first = await post_signed(client, STATUS_PATH, call)
        again = await post_signed(client, STATUS_PATH, call)
    for response in (first, again):
        assert response.status_code == 200, response.text
        assert response.headers["content-type"].startswith(TWIML)
        assert response.content == b'<?xml version="1.0" encoding="UTF-8"?><Response/>'
    after = await recipients_of(db, campaign_id)
    assert [r.status for r in after] == ["delivered", "sent"] and after[0].delivered_at is not None
    campaign = await campaign_of(db, campaign_id)
    assert (campaign.sent, campaign.delivered) == (2, 1)
    [logged] = await calls_of(db, account.channel_id)  # the replay left no second row
    assert logged.provider == "twilio" and logged.kind == "status" and logged.tenant_id == api.tenant.id  # type: ignore[attr-defined]
    assert parse_qs(logged.body)["MessageStatus"] == ["delivered"]
    assert logged.headers["x-twilio-signature"] == "[redacted]"
    assert logged.outcome is not None and logged.outcome["moved"] == 1 and logged.outcome["unknown"] == 0
    async with db.transaction() as session:
        delivered = (await session.execute(select(CampaignEvent).where(
            CampaignEvent.recipient_id == after[0].id, CampaignEvent.type == "delivered"))).scalars().all()
    assert len(delivered) == 1
    assert delivered[0].metadata_ == {"source": "twilio", "status": "delivered"}
    assert delivered[0].provider_message_id == rows[0].provider_message_id


async def test_calls_not_signed_by_a_configured_account_are_refused_and_write_nothing(
        api: httpx.AsyncClient, client: httpx.AsyncClient, db: Database, settings: Settings) -> None:
    async with twilio_account(api) as account:
        campaign_id, rows, _ = await _sent_campaign(api, db, settings, account, count=1)
        headers, body = account.status(rows[0].provider_message_id or "", "delivered")
        forged = await client.post(STATUS_PATH, content=body.replace(b"delivered", b"failed"), headers=headers)
        unsigned = await client.post(STATUS_PATH, content=body,
                                     headers={"content-type": "application/x-www-form-urlencoded"})
        # Signed for another URL: Twilio signs the exact URL it calls.
        wrong_url = await client.post(INBOUND_PATH, content=body, headers=headers)
        other = account.status(rows[0].provider_message_id or "", "delivered")
        unknown_account = await client.post(
            STATUS_PATH, content=other[1].replace(account.sid.encode(), b"AC" + b"0" * 32), headers=other[0])
        no_such_provider = await client.post("/webhooks/carrier-pigeon", content=body, headers=headers)
    for response in (forged, unsigned, wrong_url, unknown_account):
        assert response.status_code == 403, response.text
        assert response.headers["content-type"].startswith("application/problem+json")
    assert no_such_provider.status_code == 404
    assert await calls_of(db, account.channel_id) == []
    assert [r.status for r in await recipients_of(db, campaign_id)] == ["sent"]


async def test_statuses_out_of_order_never_go_backwards_nor_count_twice(
        api: httpx.AsyncClient, client: httpx.AsyncClient, db: Database, settings: Settings) -> None:
    async with twilio_account(api) as account:
        campaign_id, rows, _ = await _sent_campaign(api, db, settings, account)
        read_first, failed_first = rows[0].provider_message_id or "", rows[1].provider_message_id or ""
        for sid, status in ((read_first, "read"), (read_first, "delivered"), (read_first, "sent"),
                            (failed_first, "undelivered"), (failed_first, "delivered"), (failed_first, "sent")):
            response = await post_signed(client, STATUS_PATH, account.status(
                sid, status, error_code=30005 if status == "undelivered" else None))
            assert response.status_code == 200, response.text
    read, failed = await recipients_of(db, campaign_id)
    assert (read.status, read.delivered_at is not None, read.opened_at is not None) == ("opened", True, True)
    assert (failed.status, failed.delivered_at, failed.failure_reason) == (
        "failed", None, "Twilio 30005: unknown destination handset")
    campaign = await campaign_of(db, campaign_id)
    assert (campaign.sent, campaign.delivered, campaign.opened, campaign.failed) == (2, 1, 1, 1)
    async with db.transaction() as session:
        opened = (await session.execute(select(CampaignEvent).where(
            CampaignEvent.recipient_id == read.id, CampaignEvent.type == "opened"))).scalar_one()
    assert opened.metadata_ == {"source": "twilio", "status": "read"}


async def test_an_unknown_message_id_is_acknowledged_and_logged_as_deferred(
        api: httpx.AsyncClient, client: httpx.AsyncClient, db: Database) -> None:
    async with twilio_account(api) as account:
        response = await post_signed(client, STATUS_PATH, account.status("SM" + "f" * 32, "delivered"))
    assert response.status_code == 200
    [logged] = await calls_of(db, account.channel_id)
    assert logged.outcome is not None
    # Its send may not be recorded yet: it waits (test_deferred_statuses), and is logged unknown only after the wait.
    assert (logged.outcome["deferred"], logged.outcome["unknown"], logged.outcome["unknown_message_ids"]) == (1, 0, [])


async def test_an_authentic_call_that_is_not_twilios_format_is_logged_and_answered_422(
        api: httpx.AsyncClient, client: httpx.AsyncClient, db: Database) -> None:
    async with twilio_account(api) as account:
        odd = await post_signed(client, STATUS_PATH, account.status("SM" + "1" * 32, "exploded"))
        huge = await client.post(STATUS_PATH, content=b"x" * (webhooks_service.MAX_BODY_BYTES + 1),
                                 headers={"content-type": "application/x-www-form-urlencoded"})
    assert odd.status_code == 422 and odd.headers["content-type"].startswith("application/problem+json")
    assert huge.status_code == 413
    [logged] = await calls_of(db, account.channel_id)
    assert logged.outcome is not None and "exploded" in logged.outcome["error"]


async def test_a_failure_meaning_stop_fails_the_message_and_unsubscribes_the_contact(
        api: httpx.AsyncClient, client: httpx.AsyncClient, db: Database, settings: Settings) -> None:
    async with twilio_account(api) as account:
        campaign_id, rows, contacts = await _sent_campaign(api, db, settings, account, count=1)
        response = await post_signed(client, STATUS_PATH, account.status(
            rows[0].provider_message_id or "", "failed", error_code=21610))
    assert response.status_code == 200
    [row] = await recipients_of(db, campaign_id)
    assert row.status == "failed" and "21610" in (row.failure_reason or "")
    consent = await _consent(api, contacts[0]["id"])
    assert (consent["status"], consent["source"]) == ("unsubscribed", "twilio:21610")
    assert (await campaign_of(db, campaign_id)).failed == 1


async def test_a_providers_opt_out_leaves_a_complaint_or_bounce_as_it_was(
        api: httpx.AsyncClient, client: httpx.AsyncClient, db: Database, settings: Settings) -> None:
    async with twilio_account(api) as account:
        campaign_id, rows, contacts = await _sent_campaign(api, db, settings, account, count=2)
        # After the send, the person complained (and the other number bounced) for reasons of their own.
        for contact, status in zip(contacts, ("complained", "bounced"), strict=True):
            patched = await api.patch(f"/api/v1/contacts/{contact['id']}", json={"subscriptions": {"sms": status}})
            assert patched.status_code == 200, patched.text
        for row in rows:
            response = await post_signed(client, STATUS_PATH, account.status(
                row.provider_message_id or "", "failed", error_code=21610))
            assert response.status_code == 200
    assert [r.status for r in await recipients_of(db, campaign_id)] == ["failed", "failed"]
    assert [(await _consent(api, c["id"]))["status"] for c in contacts] == ["complained", "bounced"]
    assert [(c.outcome or {}).get("unsubscribed") for c in await calls_of(db, account.channel_id)] == [0, 0]


async def test_a_transient_failure_after_acceptance_gives_the_message_another_attempt(
        api: httpx.AsyncClient, client: httpx.AsyncClient, db: Database, settings: Settings) -> None:
    async with twilio_account(api) as account:
        campaign_id, rows, _ = await _sent_campaign(api, db, settings, account, max_attempts=2)
        first_sid = rows[0].provider_message_id or ""
        response = await post_signed(client, STATUS_PATH, account.status(first_sid, "undelivered", error_code=30001))
        assert response.status_code == 200
        [retried, untouched] = await recipients_of(db, campaign_id)
        assert (retried.status, retried.retry_count, retried.sent_at) == ("pending", 1, None)
        assert retried.send_after is not None and retried.send_after > utcnow()
        assert "30001" in (retried.failure_reason or "") and untouched.status == "sent"
        campaign = await campaign_of(db, campaign_id)
        assert (campaign.sent, campaign.pending, campaign.failed) == (1, 1, 0)

        clock.advance(timedelta(hours=2))  # past the retry backoff
        await send_due(db, settings, campaign_id)
        [resent, _] = await recipients_of(db, campaign_id)
        assert resent.status == "sent" and resent.provider_message_id not in (None, first_sid)
        # The last attempt the campaign allows: the next transient failure is final.
        response = await post_signed(client, STATUS_PATH, account.status(
            resent.provider_message_id or "", "undelivered", error_code=30001))
        assert response.status_code == 200
    [final, _] = await recipients_of(db, campaign_id)
    assert final.status == "failed"
    campaign = await campaign_of(db, campaign_id)
    assert (campaign.sent, campaign.pending, campaign.failed) == (2, 0, 1)


async def test_stop_start_and_help_keywords(api: httpx.AsyncClient, client: httpx.AsyncClient, db: Database,
                                            settings: Settings) -> None:
    async with twilio_account(api) as account:
        [stopper, other] = await sms_contacts(api, 2)
        campaign_id = await sms_campaign(api, account, [stopper, other])
        stop = await post_signed(client, INBOUND_PATH, account.inbound(stopper["phone"], "  Stop "))
        assert stop.status_code == 200 and stop.headers["content-type"].startswith(TWIML)
        assert b"<Message>Acme: You are unsubscribed" in stop.content and b"Reply START" in stop.content
        consent = await _consent(api, stopper["id"])
        assert (consent["status"], consent["source"]) == ("unsubscribed", "keyword")

        # The next claim leaves the contact out: only the other contact gets the message.
        await send_due(db, settings, campaign_id)
        sent_to = [parse_qs(r.body.decode())["To"][0] for r in account.control.sent_to("/Messages.json")]
        assert sent_to == [other["phone"]]
        assert [r.status for r in await recipients_of(db, campaign_id)] == ["skipped", "sent"]

        start = await post_signed(client, INBOUND_PATH, account.inbound(stopper["phone"], "start"))
        assert start.status_code == 200 and b"You are subscribed again" in start.content
        assert (await _consent(api, stopper["id"]))["status"] == "subscribed"

        help_ = await post_signed(client, INBOUND_PATH, account.inbound(other["phone"], "HELP"))
        assert help_.status_code == 200
        assert help_.content == (b'<?xml version="1.0" encoding="UTF-8"?><Response><Message>Acme: Msg frequency '
                                 b"varies. Msg &amp; data rates may apply. Reply STOP to unsubscribe."
                                 b"</Message></Response>")
        chat = await post_signed(client, INBOUND_PATH, account.inbound(other["phone"], "stop sending me deals"))
        assert chat.status_code == 200 and chat.content.endswith(b"<Response/>")
        assert (await _consent(api, other["id"]))["status"] == "subscribed"  # not a keyword: a sentence
    outcomes = [c.outcome for c in await calls_of(db, account.channel_id)]
    assert [o and {k: o[k] for k in ("STOP", "START", "HELP", "other") if k in o} for o in outcomes] == [
        {"STOP": 1}, {"START": 1}, {"HELP": 1}, {"other": 1}]


async def test_keyword_replies_name_the_configured_brand_and_unknown_senders_create_nothing(
        api: httpx.AsyncClient, client: httpx.AsyncClient, db: Database) -> None:
    async with db.transaction() as session:
        before = len((await session.execute(select(Contact.id).where(
            Contact.tenant_id == api.tenant.id))).all())  # type: ignore[attr-defined]
    async with twilio_account(api) as account:
        patched = await api.patch(f"/api/v1/channels/{account.channel_id}", json={"config": {
            "brand_name": "Bloom Florists", "message_frequency": "Up to 4 msgs/month"}})
        assert patched.status_code == 200, patched.text
        help_ = await post_signed(client, INBOUND_PATH, account.inbound("+14155559876", "info"))
        stop = await post_signed(client, INBOUND_PATH, account.inbound("+14155559876", "UNSUBSCRIBE"))
    assert b"Bloom Florists: Up to 4 msgs/month. Msg &amp; data rates may apply." in help_.content
    assert b"Bloom Florists: You are unsubscribed" in stop.content
    async with db.transaction() as session:
        after = len((await session.execute(select(Contact.id).where(
            Contact.tenant_id == api.tenant.id))).all())  # type: ignore[attr-defined]
    assert after == before
    outcomes = [c.outcome or {} for c in await calls_of(db, account.channel_id)]
    assert [o.get("unknown_sender") for o in outcomes] == [1, 1]


async def test_the_call_log_is_listed_per_tenant_and_purged_after_retention(
        api: httpx.AsyncClient, client: httpx.AsyncClient, db: Database) -> None:
    async with twilio_account(api) as account:
        clock.freeze(utcnow() - timedelta(days=40))
        old = await post_signed(client, INBOUND_PATH, account.inbound("+14155550111", "HELP"))
        clock.reset()
        recent = [await post_signed(client, INBOUND_PATH, account.inbound("+14155550111", word))
                  for word in ("HELP", "INFO")]
    assert all(r.status_code == 200 for r in (old, *recent))
    page = (await api.get("/api/v1/webhook-calls", params={"provider": "twilio", "limit": 2})).json()
    assert len(page["items"]) == 2 and page["next_cursor"]
    rest = (await api.get("/api/v1/webhook-calls", params={"provider": "twilio", "cursor": page["next_cursor"]})).json()
    ids = [c["id"] for c in page["items"] + rest["items"]]
    assert ids == sorted(ids, reverse=True) and len(ids) == 3  # newest first, each once
    one = (await api.get(f"/api/v1/webhook-calls/{ids[0]}")).json()
    assert one["headers"]["x-twilio-signature"] == "[redacted]" and "Body=INFO" in one["body"]
    assert len(one["body_sha256"]) == 64 and one["channel_config_id"] == account.channel_id
    assert (await api.get("/api/v1/webhook-calls", params={"provider": "whatsapp"})).json()["items"] == []

    assert "tracking.purge_webhook_calls" in registry.ticks
    async with db.transaction() as session:
        removed = await webhooks_service.purge_calls(session, retention_days=settings_days())
    assert removed >= 1
    left = await calls_of(db, account.channel_id)
    assert [c.id for c in left] == sorted(ids[:2])


def settings_days() -> int:
    return Settings().webhook_retention_days  # the default: 30


async def test_the_sandboxs_own_callbacks_reach_a_served_clarion(
        api: httpx.AsyncClient, app, db: Database, settings: Settings) -> None:  # type: ignore[no-untyped-def]
    """What `make demo` relies on: the sandbox posts signed callbacks over HTTP to Clarion's own webhook URL."""
    async with serve_asgi(app) as served:
        app.state.settings = settings.model_copy(update={"base_url": served})
        try:
            async with twilio_account(api) as account:
                patched = await api.patch(f"/api/v1/channels/{account.channel_id}", json={
                    "config": {"status_callback_url": f"{served}{STATUS_PATH}"}})
                assert patched.status_code == 200, patched.text
                [contact] = await sms_contacts(api, 1)
                campaign_id = await sms_campaign(api, account, [contact])
                await send_due(db, settings, campaign_id)
                for _ in range(200):
                    [row] = await recipients_of(db, campaign_id)
                    if row.status == "delivered":
                        break
                    await asyncio.sleep(0.05)
        finally:
            app.state.settings = settings
    assert row.status == "delivered"
    statuses = [parse_qs(c.body)["MessageStatus"][0] for c in await calls_of(db, account.channel_id)]
    assert statuses == ["queued", "sent", "delivered"]


async def test_channel_accounts_store_the_account_their_webhooks_name(api: httpx.AsyncClient, db: Database) -> None:
    async with twilio_account(api) as account:
        from clarion.models import ChannelConfig

        async with db.transaction() as session:
            row = await session.get(ChannelConfig, uuid.UUID(account.channel_id))
            assert row is not None and row.webhook_account == account.sid
        shown = (await api.get(f"/api/v1/channels/{account.channel_id}")).json()
        assert shown["config"]["auth_token"] != account.token  # masked, never shown
