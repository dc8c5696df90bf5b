"""Linking Telegram chats to contacts.

Every contact has a deep link https://t.me/<bot>?start=<token> (templates get it as `telegram_start_url`). A
person who opens it and presses Start sends the bot "/start <token>"; the webhook hands the token and the chat
id to link_telegram_chat, which verifies it and stores the chat on the contact. The token is a compact signed
token (kit.signing) of the contact id, bound to the tenant: 38 characters of [A-Za-z0-9_-], within Telegram's
64-character start-parameter alphabet, and unforgeable without the install secret.
"""

from __future__ import annotations

import uuid

from sqlalchemy.ext.asyncio import AsyncSession

from clarion.audience.repository import ContactRepo
from clarion.kit import signing
from clarion.kit.repository import conflict_on_violation

START_PURPOSE = "tg-start"
LINK_SOURCE = "telegram_start"


def telegram_start_token(tenant_id: uuid.UUID, contact_id: uuid.UUID, *, secret: str | None = None) -> str:
    """The /start payload that links a chat to this contact (`secret`: the install secret; default: settings)."""
    return signing.signer_for(secret or signing.default_secret()).sign_compact(START_PURPOSE, contact_id,
                                                                              bound_to=tenant_id)


def telegram_deep_link(bot_username: str, tenant_id: uuid.UUID, contact_id: uuid.UUID, *,
                       secret: str | None = None) -> str:
    return f"https://t.me/{bot_username}?start={telegram_start_token(tenant_id, contact_id, secret=secret)}"


async def link_telegram_chat(session: AsyncSession, tenant_id: uuid.UUID, token: str, chat_id: str, *,
                             secret: str | None = None) -> uuid.UUID | None:
    """Link `chat_id` to the contact `token` names and subscribe the contact to telegram (source
    telegram_start): opening the link and pressing Start is the person's opt-in. Returns the contact id; None
    when the token does not verify for this tenant or its contact no longer exists. A chat belongs to one
    contact: linking it elsewhere unlinks it from the contact that had it."""
    # service imports this module to re-export it, so its consent function is looked up when called.
    from clarion.audience import service as contacts

    signer = signing.signer_for(secret or signing.default_secret())
    contact_id = signer.verify_compact(START_PURPOSE, token.strip(), bound_to=tenant_id)
    if contact_id is None:
        return None
    repo = ContactRepo(session, tenant_id)
    contact = await repo.find(contact_id)
    if contact is None:
        return None
    if contact.telegram_chat_id != chat_id:
        await repo.release_telegram_chat(chat_id, keep=contact.id)
        contact.telegram_chat_id = chat_id
        async with conflict_on_violation(session, f"Telegram chat {chat_id} was linked by another request at the "
                                         "same time"):
            await session.flush()
    await contacts.set_subscription(session, tenant_id, contact.id, "telegram", "subscribed", LINK_SOURCE)
    return contact.id
