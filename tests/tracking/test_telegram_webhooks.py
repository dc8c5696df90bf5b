"""Telegram bot updates through the real app on both databases: /start <token> links a chat to its contact,
/stop and blocking the bot end the subscription, an update without the bot's secret token is refused."""

from __future__ import annotations

import secrets
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

import httpx
from sqlalchemy import select

from clarion.audience.telegram_chats import telegram_start_token
from clarion.config import Settings
from clarion.db import Database
from clarion.models import Contact
from clarion.sandbox import telegram as sandbox
from clarion.sandbox.control import SandboxControl
from tests.fakes.serving import serve_asgi
from tests.tracking.twilio_helpers import calls_of

HOOK = "/webhooks/telegram"


@dataclass
class Bot:
    secret_token: str
    control: SandboxControl
    channel_id: str

    async def post(self, client: httpx.AsyncClient, update: dict, secret_token: str | None = None) -> httpx.Response:  # type: ignore[type-arg]
        headers, body = sandbox.signed_update(update, secret_token or self.secret_token)
        return await client.post(HOOK, content=body, headers=headers)

    def sent_texts(self) -> list[tuple[str, str]]:
        return [(str(r.data["chat_id"]), r.data["text"]) for r in self.control.requests
                if r.path.endswith("/sendMessage")]


@asynccontextmanager
async def telegram_bot(api: httpx.AsyncClient) -> AsyncIterator[Bot]:
    secret_token = secrets.token_urlsafe(24)  # this test's own bot: no other tenant's account verifies its calls
    control = SandboxControl()
    async with serve_asgi(sandbox.create_app(control)) as url:
        response = await api.post("/api/v1/channels", json={
            "channel": "telegram", "provider": "telegram", "name": f"bot-{uuid.uuid4().hex[:6]}",
            "config": {"bot_token": sandbox.DEFAULT_BOT_TOKEN, "bot_username": sandbox.DEFAULT_BOT_USERNAME,
                       "webhook_secret_token": secret_token, "api_base_url": url}})
        assert response.status_code == 201, response.text
        yield Bot(secret_token, control, response.json()["id"])


async def _contact(db: Database, contact_id: str) -> Contact:
    async with db.transaction() as session:
        return (await session.execute(select(Contact).where(Contact.id == uuid.UUID(contact_id)))).scalar_one()


async def test_start_links_the_chat_and_stop_or_blocking_unsubscribes(
        api: httpx.AsyncClient, client: httpx.AsyncClient, db: Database, settings: Settings) -> None:
    contact = (await api.post("/api/v1/contacts", json={"email": f"tg-{uuid.uuid4().hex[:8]}@example.com"})).json()
    chat_id = 500_000_000 + secrets.randbelow(10**8)
    token = telegram_start_token(api.tenant.id, uuid.UUID(contact["id"]),  # type: ignore[attr-defined]
                                 secret=settings.resolved_secret_key())
    async with telegram_bot(api) as bot:
        refused = await bot.post(client, sandbox.message_update(chat_id, f"/start {token}"), secret_token="guess")
        assert refused.status_code == 401 and await calls_of(db, bot.channel_id) == []

        forged = await bot.post(client, sandbox.message_update(chat_id, "/start " + "x" * 38))
        assert forged.status_code == 200 and (await _contact(db, contact["id"])).telegram_chat_id is None

        linked = await bot.post(client, sandbox.message_update(chat_id, f"/start {token}"))
        assert linked.status_code == 200
        assert (await _contact(db, contact["id"])).telegram_chat_id == str(chat_id)
        shown = (await api.get(f"/api/v1/contacts/{contact['id']}")).json()["subscriptions"]["telegram"]
        assert shown["status"] == "subscribed"

        stop = await bot.post(client, sandbox.message_update(chat_id, "/stop", message_id=2))
        assert stop.status_code == 200
        shown = (await api.get(f"/api/v1/contacts/{contact['id']}")).json()["subscriptions"]["telegram"]
        assert (shown["status"], shown["source"]) == ("unsubscribed", "keyword")

        unblocked = await bot.post(client, sandbox.chat_member_update(chat_id, old="kicked", new="member"))
        assert unblocked.status_code == 200
        shown = (await api.get(f"/api/v1/contacts/{contact['id']}")).json()["subscriptions"]["telegram"]
        assert (shown["status"], shown["source"]) == ("subscribed", "telegram:bot unblocked")
        blocked = await bot.post(client, sandbox.chat_member_update(chat_id, old="member", new="kicked"))
        assert blocked.status_code == 200
        shown = (await api.get(f"/api/v1/contacts/{contact['id']}")).json()["subscriptions"]["telegram"]
        assert (shown["status"], shown["source"]) == ("unsubscribed", "telegram:bot blocked")
        texts = bot.sent_texts()
    # The link and the /stop were confirmed in the chat; the forged /start was not answered.
    assert [chat for chat, _ in texts] == [str(chat_id)] * 2
    assert "Send /stop to unsubscribe" in texts[0][1] and "You are unsubscribed" in texts[1][1]
    calls = await calls_of(db, bot.channel_id)
    assert all(c.headers["x-telegram-bot-api-secret-token"] == "[redacted]" for c in calls)
    outcomes = [c.outcome or {} for c in calls]
    assert [outcomes[0].get("link_refused"), outcomes[1].get("linked"), outcomes[2].get("unsubscribed")] == [1, 1, 1]
