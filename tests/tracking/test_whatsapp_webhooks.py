"""WhatsApp Cloud API webhooks through the real app on both databases: the verification handshake, signed status
calls for messages the real dispatcher sent through the WhatsApp sandbox, marketing opt-outs, inbound STOP."""

from __future__ import annotations

import secrets
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import httpx

from clarion.config import Settings
from clarion.db import Database
from clarion.sandbox import whatsapp as sandbox
from clarion.sandbox.control import SandboxControl
from tests.fakes.serving import serve_asgi
from tests.tracking.twilio_helpers import calls_of, campaign_of, recipients_of, send_due

HOOK = "/webhooks/whatsapp"


@dataclass
class WhatsApp:
    account: sandbox.SandboxAccount
    control: SandboxControl
    channel_id: str

    async def post(self, client: httpx.AsyncClient, payload: dict[str, Any]) -> httpx.Response:
        headers, body = sandbox.signed_call(payload, self.account.app_secret)
        return await client.post(HOOK, content=body, headers=headers)


@asynccontextmanager
async def whatsapp_account(api: httpx.AsyncClient) -> AsyncIterator[WhatsApp]:
    # A phone number id and secrets of its own: other tests' tenants never share this account.
    account = sandbox.SandboxAccount(phone_number_id=str(10**14 + secrets.randbelow(10**14)),
                                     app_secret=secrets.token_hex(16), verify_token=secrets.token_hex(8))
    control = SandboxControl()
    async with serve_asgi(sandbox.create_app(control, account, status_delay_seconds=0.01)) as url:
        response = await api.post("/api/v1/channels", json={
            "channel": "whatsapp", "provider": "whatsapp", "name": f"wa-{uuid.uuid4().hex[:6]}",
            "config": account.channel_config(url), "rate_limit_per_second": 1000})
        assert response.status_code == 201, response.text
        yield WhatsApp(account, control, response.json()["id"])


async def whatsapp_campaign(api: httpx.AsyncClient, wa: WhatsApp, count: int) -> tuple[str, list[str]]:
    """A running WhatsApp campaign to `count` new contacts, nothing sent yet: its id and the numbers."""
    base = 2_000_000 + secrets.randbelow(7_000_000)
    numbers = [f"+1415{base + i:07d}" for i in range(count)]
    for number in numbers:
        assert (await api.post("/api/v1/contacts", json={"phone": number})).status_code == 201
    created = await api.post("/api/v1/campaigns", json={
        "name": "WA spring", "channel": "whatsapp", "template_name": "spring_sale", "language_code": "en_US",
        "channel_config_id": wa.channel_id})
    assert created.status_code == 201, created.text
    campaign_id = created.json()["id"]
    added = await api.post(f"/api/v1/campaigns/{campaign_id}/recipients", json={"phone_numbers": numbers})
    assert added.status_code == 200 and added.json()["recipients_added"] == count, added.text
    assert (await api.post(f"/api/v1/campaigns/{campaign_id}/start")).status_code == 200
    return campaign_id, numbers


async def _sent(api: httpx.AsyncClient, db: Database, settings: Settings, wa: WhatsApp,
                count: int) -> tuple[str, list[Any], list[str]]:
    campaign_id, numbers = await whatsapp_campaign(api, wa, count)
    await send_due(db, settings, campaign_id)
    rows = await recipients_of(db, campaign_id)
    assert [r.status for r in rows] == ["sent"] * count and all((r.provider_message_id or "").startswith("wamid.")
                                                                 for r in rows)
    return campaign_id, rows, numbers


async def _status_on(api: httpx.AsyncClient, number: str) -> dict[str, Any]:
    found = (await api.get("/api/v1/contacts", params={"q": number})).json()["items"]
    [contact] = [c for c in found if c["phone"] == number]
    return dict(contact["subscriptions"].get("whatsapp") or {})


async def test_the_verification_handshake_answers_only_this_accounts_token(
        api: httpx.AsyncClient, client: httpx.AsyncClient) -> None:
    async with whatsapp_account(api) as wa:
        ok = await client.get(HOOK, params={"hub.mode": "subscribe", "hub.verify_token": wa.account.verify_token,
                                            "hub.challenge": "1158201444"})
        wrong = await client.get(HOOK, params={"hub.mode": "subscribe", "hub.verify_token": "guess",
                                               "hub.challenge": "1158201444"})
    assert (ok.status_code, ok.text) == (200, "1158201444")
    assert wrong.status_code == 403 and wrong.headers["content-type"].startswith("application/problem+json")


async def test_signed_statuses_move_recipients_and_opt_outs_end_the_subscription(
        api: httpx.AsyncClient, client: httpx.AsyncClient, db: Database, settings: Settings) -> None:
    async with whatsapp_account(api) as wa:
        campaign_id, rows, numbers = await _sent(api, db, settings, wa, 3)
        read, stopped, throttled = rows
        wa_ids = [n.removeprefix("+") for n in numbers]
        # One call, several statuses, out of order: read arrives before delivered.
        payload = sandbox.status_payload(wa.account, read.provider_message_id or "", "read", recipient_id=wa_ids[0])
        payload["entry"][0]["changes"][0]["value"]["statuses"] += [
            sandbox.status_payload(wa.account, read.provider_message_id or "", "delivered",
                                   recipient_id=wa_ids[0])["entry"][0]["changes"][0]["value"]["statuses"][0],
            sandbox.status_payload(wa.account, stopped.provider_message_id or "", "failed", recipient_id=wa_ids[1],
                                   error_code=131050)["entry"][0]["changes"][0]["value"]["statuses"][0],
            sandbox.status_payload(wa.account, throttled.provider_message_id or "", "failed", recipient_id=wa_ids[2],
                                   error_code=131056)["entry"][0]["changes"][0]["value"]["statuses"][0]]
        unsigned = await client.post(HOOK, json=payload)
        garbage = await client.post(HOOK, content=b"not json", headers={"content-type": "application/json"})
        assert (unsigned.status_code, garbage.status_code) == (401, 401)
        assert await calls_of(db, wa.channel_id) == []
        response = await wa.post(client, payload)
        assert response.status_code == 200, response.text
        replayed = await wa.post(client, payload)
        assert replayed.status_code == 200
    after = {r.id: r for r in await recipients_of(db, campaign_id)}
    assert after[read.id].status == "opened" and after[read.id].delivered_at is not None
    assert after[stopped.id].status == "failed"
    assert (after[throttled.id].status, after[throttled.id].retry_count) == ("pending", 1)
    campaign = await campaign_of(db, campaign_id)
    assert (campaign.sent, campaign.delivered, campaign.opened, campaign.failed, campaign.pending) == (2, 1, 1, 1, 1)
    consent = await _status_on(api, numbers[1])
    assert (consent["status"], consent["source"]) == ("unsubscribed", "whatsapp:131050")
    [logged] = await calls_of(db, wa.channel_id)
    assert logged.headers["x-hub-signature-256"] == "[redacted]"
    assert logged.outcome is not None and (logged.outcome["requeued"], logged.outcome["opted_out"]) == (1, 1)


async def test_marketing_preferences_and_inbound_stop_change_consent_and_stop_is_confirmed(
        api: httpx.AsyncClient, client: httpx.AsyncClient, db: Database, settings: Settings) -> None:
    async with whatsapp_account(api) as wa:
        _, _, numbers = await _sent(api, db, settings, wa, 2)
        before = len(wa.control.requests)
        prefs = await wa.post(client, sandbox.user_preferences_payload(wa.account, numbers[0], "stop"))
        stop = await wa.post(client, sandbox.inbound_text_payload(wa.account, numbers[1], "stop"))
        assert prefs.status_code == 200 and stop.status_code == 200
        replies = wa.control.requests[before:]
    assert (await _status_on(api, numbers[0]))["status"] == "unsubscribed"
    consent = await _status_on(api, numbers[1])
    assert (consent["status"], consent["source"]) == ("unsubscribed", "keyword")
    # The confirmation went out through the Cloud API as a free-form text (the customer-service window is open).
    [reply] = replies
    assert reply.data["to"] in (numbers[1], numbers[1].removeprefix("+"))
    assert reply.data["type"] == "text" and "You are unsubscribed" in reply.data["text"]["body"]
