"""A tenant's Twilio account in tests: the Twilio sandbox on a real port, a channel for it through the public API, an
SMS campaign sent through the real dispatcher, and webhook calls signed the way Twilio signs them."""

from __future__ import annotations

import secrets
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import httpx
from sqlalchemy import select

from clarion.db import Database
from clarion.models import WebhookCall
from clarion.sandbox import twilio as sandbox
from clarion.sandbox.control import SandboxControl
from tests.delivery import helpers as delivery_helpers
from tests.fakes.serving import serve_asgi

BASE_URL = "http://clarion.test"  # the test settings' base_url: what Twilio signs our webhook URLs with
STATUS_PATH, INBOUND_PATH = "/webhooks/twilio/status", "/webhooks/twilio/inbound"
NUMBER = sandbox.DEFAULT_NUMBER


@dataclass
class TwilioAccount:
    """One Twilio account of its own per test: calls of other tests (other tenants) never name it."""

    sid: str
    token: str
    url: str  # the sandbox's base URL
    control: SandboxControl
    channel_id: str = ""

    def status(self, message_sid: str, status: str, *, error_code: int | None = None,
               path: str = STATUS_PATH) -> tuple[dict[str, str], bytes]:
        return sandbox.status_callback(BASE_URL + path, account_sid=self.sid, auth_token=self.token,
                                       message_sid=message_sid, status=status, error_code=error_code)

    def inbound(self, sender: str, body: str) -> tuple[dict[str, str], bytes]:
        return sandbox.inbound_message(BASE_URL + INBOUND_PATH, account_sid=self.sid, auth_token=self.token,
                                       sender=sender, body=body)


@asynccontextmanager
async def twilio_account(api: httpx.AsyncClient, **channel: Any) -> AsyncIterator[TwilioAccount]:
    sid, token = "AC" + secrets.token_hex(16), secrets.token_hex(16)
    control = SandboxControl()
    app = sandbox.create_app(control, account_sid=sid, auth_token=token)
    async with serve_asgi(app) as url:
        account = TwilioAccount(sid, token, url, control)
        body = {"channel": "sms", "provider": "twilio", "name": f"twilio-{sid[-6:]}",
                # Far above Twilio's long-code default (1/s): the tests must not wait on the throttle.
                "rate_limit_per_second": 1000,
                "config": {"account_sid": sid, "auth_token": token, "from_number": NUMBER, "api_base_url": url},
                **channel}
        response = await api.post("/api/v1/channels", json=body)
        assert response.status_code == 201, response.text
        account.channel_id = response.json()["id"]
        yield account
    await app.state.sandbox.close()


async def post_signed(client: httpx.AsyncClient, path: str, signed: tuple[dict[str, str], bytes]) -> httpx.Response:
    headers, body = signed
    return await client.post(path, content=body, headers=headers)


async def sms_contacts(api: httpx.AsyncClient, count: int) -> list[dict[str, Any]]:
    base = 2_000_000 + secrets.randbelow(7_000_000)
    contacts = []
    for i in range(count):
        response = await api.post("/api/v1/contacts", json={"phone": f"+1415{base + i:07d}", "first_name": f"P{i}"})
        assert response.status_code == 201, response.text
        contacts.append(response.json())
    return contacts


async def sms_campaign(api: httpx.AsyncClient, account: TwilioAccount, contacts: list[dict[str, Any]],
                       **fields: Any) -> str:
    template = await api.post("/api/v1/templates", json={"name": f"sms-{uuid.uuid4().hex[:6]}", "channel": "sms",
                                                         "body_text": "Hi {{ contact.first_name }}, 20% off today"})
    assert template.status_code == 201, template.text
    campaign = await api.post("/api/v1/campaigns", json={
        "name": "SMS spring", "channel": "sms", "template_id": template.json()["id"],
        "channel_config_id": account.channel_id, **fields})
    assert campaign.status_code == 201, campaign.text
    campaign_id = campaign.json()["id"]
    added = await api.post(f"/api/v1/campaigns/{campaign_id}/recipients",
                           json={"contact_ids": [c["id"] for c in contacts]})
    assert added.status_code == 200 and added.json()["recipients_added"] == len(contacts), added.text
    started = await api.post(f"/api/v1/campaigns/{campaign_id}/start")
    assert started.status_code == 200, started.text
    return str(campaign_id)


# The delivery tests' helpers, under the names the tracking tests know them by.
send_due = delivery_helpers.send_due
recipients_of, campaign_of = delivery_helpers.recipients, delivery_helpers.campaign_row


async def calls_of(db: Database, channel_id: str) -> list[WebhookCall]:
    async with db.transaction() as session:
        rows = await session.execute(select(WebhookCall).where(
            WebhookCall.channel_config_id == uuid.UUID(channel_id)).order_by(WebhookCall.id))
        return list(rows.scalars())
