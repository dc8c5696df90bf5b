"""Telegram and Web Push campaigns through the real dispatcher on both databases, against the sandboxes over
HTTP: recipients addressed by linked chat and by browser subscriptions, HTML-safe Telegram text, the decrypted
push notification, gone subscriptions pruned — and the /start deep link in an email that links the chat."""

from __future__ import annotations

import json
import re
import uuid
from pathlib import Path
from typing import Any

import httpx

from clarion.audience import service as audience
from clarion.config import Settings
from clarion.db import Database
from clarion.delivery.channels.webpush import generate_vapid_keys
from clarion.sandbox import telegram as telegram_sandbox
from clarion.sandbox import webpush as push_sandbox
from clarion.sandbox.control import SandboxControl
from tests.delivery.helpers import CAMPAIGNS, parsed, recipients, send_due
from tests.fakes.serving import serve_asgi


async def created(api: httpx.AsyncClient, path: str, body: dict[str, Any]) -> dict[str, Any]:
    response = await api.post(path, json=body)
    assert response.status_code in (200, 201), response.text
    return dict(response.json())


async def contact(api: httpx.AsyncClient, **fields: Any) -> str:
    body = {"email": f"{uuid.uuid4().hex[:10]}@example.com", **fields}
    return str((await created(api, "/api/v1/contacts", body))["id"])


async def telegram_channel(api: httpx.AsyncClient, url: str) -> None:
    await created(api, "/api/v1/channels", {
        "channel": "telegram", "provider": "telegram", "name": f"bot-{uuid.uuid4().hex[:6]}",
        "config": {"bot_token": telegram_sandbox.DEFAULT_BOT_TOKEN, "bot_username": telegram_sandbox.DEFAULT_BOT_USERNAME,
                   "webhook_secret_token": telegram_sandbox.DEFAULT_SECRET_TOKEN, "api_base_url": url}})


async def run_campaign(api: httpx.AsyncClient, db: Database, settings: Settings, channel: str, template: dict[str, Any],
                       contact_ids: list[str], **fields: Any) -> str:
    template_id = (await created(api, "/api/v1/templates", {"name": f"t-{uuid.uuid4().hex[:6]}", "channel": channel,
                                                            **template}))["id"]
    campaign_id = (await created(api, CAMPAIGNS, {"name": "Spring", "channel": channel, "template_id": template_id,
                                                  **fields}))["id"]
    added = await created(api, f"{CAMPAIGNS}/{campaign_id}/recipients", {"contact_ids": contact_ids})
    assert added["recipients_added"] == len(contact_ids), added
    await created(api, f"{CAMPAIGNS}/{campaign_id}/start", {})
    await send_due(db, settings, campaign_id)
    return str(campaign_id)


async def link_chat(db: Database, settings: Settings, tenant_id: uuid.UUID, contact_id: str, chat_id: str) -> None:
    link = audience.telegram_deep_link("any_bot", tenant_id, uuid.UUID(contact_id), secret=settings.resolved_secret_key())
    async with db.transaction() as session:
        assert await audience.link_telegram_chat(session, tenant_id, link.rsplit("=", 1)[1], chat_id,
                                                 secret=settings.resolved_secret_key())


async def test_a_telegram_campaign_goes_to_linked_chats_with_data_escaped(api: httpx.AsyncClient, db: Database,
                                                                          settings: Settings) -> None:
    tenant_id = api.tenant.id  # type: ignore[attr-defined]
    control = SandboxControl()
    async with serve_asgi(telegram_sandbox.create_app(control)) as url:
        await telegram_channel(api, url)
        linked = await contact(api, first_name="<Ann & co>")
        unlinked = await contact(api, subscriptions={"telegram": "subscribed"})
        await link_chat(db, settings, tenant_id, linked, "111222333")
        campaign_id = await run_campaign(
            api, db, settings, "telegram", {"body_text": "<b>Hi {{ contact.first_name }}</b>, 20% off today"},
            [linked, unlinked])
    [request] = control.sent_to("/sendMessage")
    assert json.loads(request.body) == {"chat_id": 111222333, "parse_mode": "HTML",
                                        "text": "<b>Hi &lt;Ann &amp; co&gt;</b>, 20% off today"}
    rows = {str(r.contact_id): r for r in await recipients(db, campaign_id)}
    assert rows[linked].status == "sent" and rows[linked].provider_message_id == "111222333:1"
    assert rows[unlinked].status == "skipped" and "telegram" in (rows[unlinked].failure_reason or "")


async def test_a_push_campaign_reaches_every_browser_and_prunes_the_gone(api: httpx.AsyncClient, db: Database,
                                                                        settings: Settings) -> None:
    keys = generate_vapid_keys()
    service = push_sandbox.PushService()
    async with serve_asgi(push_sandbox.create_app(SandboxControl(), service)) as url:
        await created(api, "/api/v1/channels", {
            "channel": "push", "provider": "webpush", "name": f"push-{uuid.uuid4().hex[:6]}",
            "config": {**keys, "vapid_subject": "mailto:push@shop.example"}})
        ann, bob, cid = await contact(api, first_name="Ann"), await contact(api, first_name="Bob"), \
            await contact(api, subscriptions={"push": "subscribed"})
        browsers: dict[str, list[push_sandbox.BrowserSubscription]] = {ann: [], bob: []}
        for owner, count in ((ann, 2), (bob, 1)):
            for _ in range(count):
                browser = service.subscribe(url, application_server_key=keys["vapid_public_key"])
                subscription = browser.to_json()
                await created(api, "/api/v1/push/subscriptions", {"contact_id": owner, "endpoint": browser.endpoint,
                                                                  "keys": subscription["keys"]})
                browsers[owner].append(browser)
        service.unsubscribe(browsers[ann][1].endpoint)  # Ann revoked one browser's permission
        service.unsubscribe(browsers[bob][0].endpoint)  # Bob revoked his only one
        campaign_id = await run_campaign(
            api, db, settings, "push",
            {"subject": "Sale for {{ contact.first_name }}", "body_text": "20% off today",
             "thumbnail_url": "https://shop.example/icon.png",
             "variables": {"push_url": "https://shop.example/sale?c={{ contact.id }}"}},
            [ann, bob, cid])
    [received] = service.received
    assert received.subscription_id == browsers[ann][0].id
    assert received.json() == {"title": "Sale for Ann", "body": "20% off today",
                               "url": f"https://shop.example/sale?c={ann}", "icon": "https://shop.example/icon.png"}
    rows = {str(r.contact_id): r for r in await recipients(db, campaign_id)}
    assert rows[ann].status == "sent" and rows[ann].provider_message_id
    assert rows[bob].status != "sent" and "gone" in (rows[bob].failure_reason or "")
    assert rows[cid].status == "skipped" and "push" in (rows[cid].failure_reason or "")
    left = {owner: (await api.get("/api/v1/push/subscriptions", params={"contact_id": owner})).json()["items"]
            for owner in (ann, bob)}
    assert [s["endpoint"] for s in left[ann]] == [browsers[ann][0].endpoint]
    assert left[ann][0]["last_success_at"] is not None
    assert left[bob] == []


async def test_an_email_carries_the_contacts_telegram_start_link_that_links_the_chat(
        api: httpx.AsyncClient, db: Database, settings: Settings) -> None:
    tenant_id = api.tenant.id  # type: ignore[attr-defined]
    async with serve_asgi(telegram_sandbox.create_app(SandboxControl())) as url:
        await telegram_channel(api, url)
    ann = await contact(api, first_name="Ann")
    campaign_id = await run_campaign(
        api, db, settings, "email",
        {"subject": "Join us", "body_html": '<p><a href="{{ telegram_start_url }}">Telegram</a></p>'}, [ann],
        track_clicks=False, track_opens=False)
    [row] = await recipients(db, campaign_id)
    assert row.status == "sent", row.failure_reason
    raw = next(Path(settings.data_dir).rglob(f"{row.provider_message_id}.eml")).read_bytes()
    html = parsed(raw).get_body(("html",)).get_content()
    match = re.search(rf'href="https://t\.me/{telegram_sandbox.DEFAULT_BOT_USERNAME}\?start=([A-Za-z0-9_-]+)"', html)
    assert match, html
    async with db.transaction() as session:
        linked = await audience.link_telegram_chat(session, tenant_id, match.group(1), "555",
                                                   secret=settings.resolved_secret_key())
    assert str(linked) == ann
    assert (await api.get(f"/api/v1/contacts/{ann}")).json()["telegram_chat_id"] == "555"


async def test_the_channels_api_keeps_the_secrets_and_checks_the_bot(api: httpx.AsyncClient) -> None:
    keys = generate_vapid_keys()
    async with serve_asgi(telegram_sandbox.create_app(SandboxControl())) as url:
        bot = await created(api, "/api/v1/channels", {
            "channel": "telegram", "provider": "telegram", "name": f"bot-{uuid.uuid4().hex[:6]}",
            "config": {"bot_token": telegram_sandbox.DEFAULT_BOT_TOKEN, "bot_username": "clarion_sandbox_bot",
                       "webhook_secret_token": telegram_sandbox.DEFAULT_SECRET_TOKEN, "api_base_url": url}})
        checked = await api.post(f"/api/v1/channels/{bot['id']}/check")
        renamed = await api.patch(f"/api/v1/channels/{bot['id']}", json={"config": {"bot_username": "other_one_bot"}})
        refused = await api.post(f"/api/v1/channels/{bot['id']}/check")
    assert checked.status_code == 200 and checked.json() == {"ok": True, "provider": "telegram"}
    assert renamed.status_code == 200, renamed.text
    assert refused.status_code == 422 and "not @other_one_bot" in refused.json()["detail"]
    shown = bot["config"]
    assert telegram_sandbox.DEFAULT_BOT_TOKEN not in json.dumps(shown)
    assert telegram_sandbox.DEFAULT_SECRET_TOKEN not in json.dumps(shown)
    push = await created(api, "/api/v1/channels", {
        "channel": "push", "provider": "webpush", "name": f"push-{uuid.uuid4().hex[:6]}",
        "config": {"vapid_private_key": keys["vapid_private_key"], "vapid_subject": "mailto:push@shop.example"}})
    assert push["config"]["vapid_public_key"] == keys["vapid_public_key"]  # derived, for browsers to subscribe with
    assert keys["vapid_private_key"] not in json.dumps(push["config"])
    bad = await api.post("/api/v1/channels", json={
        "channel": "telegram", "provider": "telegram", "name": "broken",
        "config": {"bot_token": "nope", "webhook_secret_token": "ok"}})
    assert bad.status_code == 422 and bad.json()["errors"][0]["loc"] == ["body", "config", "bot_token"]


async def test_a_telegram_test_send_goes_to_the_chat_ids_given(api: httpx.AsyncClient) -> None:
    control = SandboxControl()
    async with serve_asgi(telegram_sandbox.create_app(control)) as url:
        await telegram_channel(api, url)
        template_id = (await created(api, "/api/v1/templates", {
            "name": f"t-{uuid.uuid4().hex[:6]}", "channel": "telegram",
            "body_text": "Hi {{ contact.first_name }}, <a href=\"{{ telegram_start_url }}\">stay in touch</a>"}))["id"]
        campaign_id = (await created(api, CAMPAIGNS, {"name": "TG test", "channel": "telegram",
                                                      "template_id": template_id}))["id"]
        sent = await api.post(f"{CAMPAIGNS}/{campaign_id}/test", json={"to": ["-100123", "912345678"]})
        refused = await api.post(f"{CAMPAIGNS}/{campaign_id}/test", json={"to": ["@someone"]})
    assert sent.status_code == 200, sent.text
    assert sent.json()["sent"] == 2
    assert sorted(json.loads(r.body)["chat_id"] for r in control.sent_to("/sendMessage")) == [-100123, 912345678]
    assert json.loads(control.requests[0].body)["text"].startswith("Hi Sample, <a href=\"")
    assert refused.status_code == 422 and refused.json()["errors"][0]["loc"] == ["body", "to", 0]


async def test_a_start_link_without_a_telegram_bot_pauses_the_campaign_instead_of_failing_everyone(
        api: httpx.AsyncClient, db: Database, settings: Settings) -> None:
    ann = await contact(api, first_name="Ann")
    campaign_id = await run_campaign(
        api, db, settings, "email",
        {"subject": "Join us", "body_html": '<a href="{{ telegram_start_url }}">Telegram</a>'}, [ann])
    campaign = (await api.get(f"{CAMPAIGNS}/{campaign_id}")).json()
    assert campaign["status"] == "paused"
    [row] = await recipients(db, campaign_id)
    assert row.status == "pending" and "bot_username" in (row.failure_reason or "")
