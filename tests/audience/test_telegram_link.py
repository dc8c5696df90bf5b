"""Linking Telegram chats to contacts through /start deep links, on both databases: the token's shape and
binding to its tenant, the link and its consent, moving a chat between contacts, and the chat as the contact's
telegram address (suppression, lookups)."""

from __future__ import annotations

import re
import uuid
from typing import Any

import httpx

from clarion.audience import service as audience
from clarion.audience.schemas import ContactCreate
from clarion.config import Settings
from clarion.db import Database
from clarion.kit.signing import COMPACT_TOKEN_LENGTH
from tests.conftest import make_tenant

BOT = "clarion_sandbox_bot"


async def new_contact(api: httpx.AsyncClient, **fields: Any) -> uuid.UUID:
    response = await api.post("/api/v1/contacts", json={"email": f"{uuid.uuid4().hex[:10]}@example.com", **fields})
    assert response.status_code == 201, response.text
    return uuid.UUID(response.json()["id"])


def start_token(link: str) -> str:
    match = re.fullmatch(rf"https://t\.me/{BOT}\?start=([A-Za-z0-9_-]+)", link)
    assert match, link
    return match.group(1)


async def link(db: Database, settings: Settings, tenant_id: uuid.UUID, token: str, chat_id: str) -> uuid.UUID | None:
    async with db.transaction() as session:
        return await audience.link_telegram_chat(session, tenant_id, token, chat_id,
                                                 secret=settings.resolved_secret_key())


def deep_link(settings: Settings, tenant_id: uuid.UUID, contact_id: uuid.UUID) -> str:
    return audience.telegram_deep_link(BOT, tenant_id, contact_id, secret=settings.resolved_secret_key())


async def link_contact(db: Database, settings: Settings, tenant_id: uuid.UUID, contact_id: uuid.UUID,
                       chat_id: str) -> uuid.UUID | None:
    """Press Start in `chat_id` on the contact's own deep link."""
    return await link(db, settings, tenant_id, start_token(deep_link(settings, tenant_id, contact_id)), chat_id)


def test_the_start_token_fits_telegrams_start_parameter(settings: Settings) -> None:
    token = start_token(deep_link(settings, uuid.uuid4(), uuid.uuid4()))
    assert len(token) == COMPACT_TOKEN_LENGTH <= 64


async def test_start_links_the_chat_and_subscribes_the_contact(api: httpx.AsyncClient, db: Database,
                                                               settings: Settings) -> None:
    tenant_id = api.tenant.id  # type: ignore[attr-defined]
    contact_id = await new_contact(api, subscriptions={"telegram": "unsubscribed"})
    token = start_token(deep_link(settings, tenant_id, contact_id))
    assert await link(db, settings, tenant_id, token, "912345678") == contact_id
    contact = (await api.get(f"/api/v1/contacts/{contact_id}")).json()
    assert contact["telegram_chat_id"] == "912345678"
    assert contact["subscriptions"]["telegram"]["status"] == "subscribed"
    assert contact["subscriptions"]["telegram"]["source"] == "telegram_start"
    assert await link(db, settings, tenant_id, token, "912345678") == contact_id  # pressing Start again is fine


async def test_a_token_of_another_tenant_or_tampered_links_nothing(api: httpx.AsyncClient, db: Database,
                                                                   settings: Settings) -> None:
    tenant_id = api.tenant.id  # type: ignore[attr-defined]
    contact_id = await new_contact(api)
    token = start_token(deep_link(settings, tenant_id, contact_id))
    other = await make_tenant(db, "Tenant B")
    tampered = token[:20] + ("A" if token[20] != "A" else "B") + token[21:]  # a bit of the contact id
    assert await link(db, settings, other.id, token, "5") is None
    assert await link(db, settings, tenant_id, tampered, "5") is None
    assert await link(db, settings, tenant_id, "not-a-token", "5") is None
    assert await link(db, settings, tenant_id, token, "5") is not None  # the genuine one still works
    async with db.transaction() as session:
        assert await audience.link_telegram_chat(session, tenant_id, token, "6", secret="another install") is None


async def test_a_chat_belongs_to_the_contact_that_linked_it_last(api: httpx.AsyncClient, db: Database,
                                                                 settings: Settings) -> None:
    tenant_id = api.tenant.id  # type: ignore[attr-defined]
    first, second = await new_contact(api), await new_contact(api)
    await link_contact(db, settings, tenant_id, first, "777")
    await link_contact(db, settings, tenant_id, second, "777")
    assert (await api.get(f"/api/v1/contacts/{first}")).json()["telegram_chat_id"] is None
    assert (await api.get(f"/api/v1/contacts/{second}")).json()["telegram_chat_id"] == "777"
    # Another tenant's contact may have the same chat with its own bot: chats are unique per tenant only.
    other = await make_tenant(db, "Tenant C")
    async with db.transaction() as session:
        theirs = await audience.create_contact(session, other.id, ContactCreate(email="c@example.com"))
        theirs_id = theirs.id
    assert await link_contact(db, settings, other.id, theirs_id, "777") == theirs_id


async def test_a_deleted_contact_links_nothing(api: httpx.AsyncClient, db: Database, settings: Settings) -> None:
    tenant_id = api.tenant.id  # type: ignore[attr-defined]
    contact_id = await new_contact(api)
    token = start_token(deep_link(settings, tenant_id, contact_id))
    assert (await api.delete(f"/api/v1/contacts/{contact_id}")).status_code == 204
    assert await link(db, settings, tenant_id, token, "31337") is None


async def test_a_suppressed_chat_is_not_reachable_on_telegram(api: httpx.AsyncClient, db: Database,
                                                             settings: Settings) -> None:
    tenant_id = api.tenant.id  # type: ignore[attr-defined]
    suppressed, reachable = await new_contact(api), await new_contact(api)
    await link_contact(db, settings, tenant_id, suppressed, "4040")
    await link_contact(db, settings, tenant_id, reachable, "4041")
    response = await api.post("/api/v1/suppressions", json={"channel": "telegram", "addresses": ["4040"]})
    assert response.status_code < 300, response.text
    campaign = (await api.post("/api/v1/campaigns", json={"name": "TG", "channel": "telegram"})).json()
    added = await api.post(f"/api/v1/campaigns/{campaign['id']}/recipients",
                           json={"contact_ids": [str(suppressed), str(reachable)]})
    assert added.status_code == 200 and added.json()["recipients_added"] == 1, added.text
    [recipient] = (await api.get(f"/api/v1/campaigns/{campaign['id']}/recipients")).json()["items"]
    assert recipient["contact_id"] == str(reachable)
