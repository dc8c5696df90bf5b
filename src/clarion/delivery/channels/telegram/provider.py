"""Telegram through the Bot API: sendMessage per chat, getMe to check the token, and the bot's webhook updates
(inbound messages for STOP/START/HELP and /start linking; my_chat_member for blocks and unblocks).

Text goes with parse_mode HTML: a template writes Telegram's tags (<b>, <i>, <a href="…">, <code> …) and spells
its own literal <, > and & as &lt; &gt; &amp;; values from contact data are escaped when the message is rendered
(delivery.compose). TextPayload.fields["parse_mode"] = None sends plain text (replies do).

Throughput: Telegram allows about 30 messages a second per bot (default_rate_limit_per_second, enforced across
workers by the pipeline) and about one a second per chat. A campaign batch holds one message per chat (a contact
appears once per campaign and a chat belongs to one contact), and every message of this provider — a batch's
or a reply's — also passes a per-chat gate that spaces messages to one chat a second apart.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import html
import json
import logging
import re
from datetime import UTC, datetime
from typing import Any

import httpx

from clarion.delivery.channels import http_provider
from clarion.delivery.channels.base import (
    ChannelCheckFailed,
    ConsentReport,
    InboundMessage,
    OutgoingMessage,
    ProviderContext,
    SendResult,
    TextPayload,
    WebhookRejected,
    WebhookRequest,
    WebhookResponse,
    WebhookResult,
)
from clarion.delivery.channels.telegram.config import TelegramConfig
from clarion.errors import Invalid

logger = logging.getLogger("clarion.delivery.telegram")

SECRET_HEADER = "x-telegram-bot-api-secret-token"
MAX_TEXT_LENGTH = 4096  # characters after entity parsing, counted in UTF-16 code units as Telegram does
PER_CHAT_INTERVAL = 1.0  # seconds between two messages to one chat
_GATE_PRUNE_AT = 4096  # entries in the per-chat gate before old ones are dropped
_TAG = re.compile(r"<[^>]*>")
_CHAT_ID = re.compile(r"^-?\d{1,20}$|^@[A-Za-z][A-Za-z0-9_]{4,31}$")


def secret_token_digest(secret_token: str) -> str:
    """What webhook routing stores and compares: a digest, so the secret itself is never kept in the clear."""
    return hashlib.sha256(secret_token.encode()).hexdigest()


def visible_length(text: str, parse_mode: str | None) -> int:
    """The length Telegram's 4,096 limit applies to: the text after entity parsing (tags removed, entities
    decoded), in UTF-16 code units (an emoji outside the BMP counts two)."""
    if parse_mode == "HTML":
        text = html.unescape(_TAG.sub("", text))
    return len(text.encode("utf-16-le")) // 2


def _chat_id(to: str) -> int | str:
    return int(to) if to.lstrip("-").isdigit() else to


def _sender_name(user: Any) -> str | None:
    if not isinstance(user, dict):
        return None
    if user.get("username"):
        return f"@{user['username']}"
    name = " ".join(str(user[k]) for k in ("first_name", "last_name") if user.get(k))
    return name or None


def _timestamp(value: Any) -> datetime:
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return datetime.fromtimestamp(value, UTC)
    raise Invalid("a Telegram update's date must be a unix time")


class TelegramProvider(http_provider.HttpChannelProvider[TelegramConfig]):
    slug = "telegram"
    channel = "telegram"
    config_schema = TelegramConfig
    default_rate_limit_per_second = 30.0
    webhook_name = "telegram"
    connect_timeout = 5.0

    def __init__(self, config: TelegramConfig, context: ProviderContext | None = None) -> None:
        super().__init__(config, context)
        self._token = config.bot_token.get_secret_value()
        self._api = f"{config.api_base_url}/bot{self._token}/"
        # chat id → the loop time before which no further message may go to that chat
        self._chat_free_at: dict[str, float] = {}

    def _scrub(self, text: str) -> str:
        # An error must never carry the token (it is in every request URL).
        return text.replace(self._token, "<bot token>")

    # --- sending ----------------------------------------------------------------------------------------------

    async def _send_one(self, client: httpx.AsyncClient, message: OutgoingMessage) -> SendResult:
        payload = message.payload
        if not isinstance(payload, TextPayload):
            return SendResult.failed(message.ref, "the telegram channel sends text payloads only", transient=False)
        if not _CHAT_ID.match(message.to):
            return SendResult.failed(message.ref, f"{message.to!r} is not a Telegram chat id", transient=False)
        parse_mode = payload.fields.get("parse_mode", "HTML")
        length = visible_length(payload.text, parse_mode)
        if length == 0:
            return SendResult.failed(message.ref, "the message text is empty", transient=False)
        if length > MAX_TEXT_LENGTH:
            return SendResult.failed(message.ref, f"the message is {length} characters long; Telegram takes "
                                     f"{MAX_TEXT_LENGTH} at most (shorten the template)", transient=False)
        body: dict[str, Any] = {"chat_id": _chat_id(message.to), "text": payload.text}
        if parse_mode:
            body["parse_mode"] = parse_mode
        if payload.fields.get("disable_web_page_preview"):
            body["link_preview_options"] = {"is_disabled": True}
        await self._chat_gate(message.to)
        try:
            response = await client.post(self._api + "sendMessage", json=body)
        except httpx.HTTPError as exc:
            error = self._scrub(http_provider.transport_error(exc, "the Bot API"))
            return SendResult.failed(message.ref, error, transient=True)
        return self._outcome(message, response)

    def _outcome(self, message: OutgoingMessage, response: httpx.Response) -> SendResult:
        status = response.status_code
        data = http_provider.json_object(response)
        if data is None:
            return SendResult.failed(message.ref, f"the Bot API answered {status} without its JSON",
                                     transient=http_provider.transient_status(status))
        if status == 200 and data.get("ok") is True:
            result = data.get("result") if isinstance(data.get("result"), dict) else {}
            chat = result.get("chat") if isinstance(result.get("chat"), dict) else {}
            return SendResult.sent(message.ref, f"{chat.get('id', message.to)}:{result.get('message_id')}")
        code = data.get("error_code", status)
        error = self._scrub(f"{code} {data.get('description') or response.reason_phrase}")
        parameters = data.get("parameters") if isinstance(data.get("parameters"), dict) else {}
        if status == 429:
            retry_after = parameters.get("retry_after")
            return SendResult.failed(message.ref, error, transient=True,
                                     retry_after=float(retry_after) if isinstance(retry_after, int | float) else None)
        if status >= 500:
            return SendResult.failed(message.ref, error, transient=True)
        if status == 403:
            # Blocked by the user, user deactivated, kicked from the group: this chat takes no more messages.
            return SendResult.failed(message.ref, error, transient=False, opted_out=True)
        if status in (401, 404):
            # The token is refused: every message would meet this, and it is fixed in the channel's settings,
            # so it must not burn the audience as permanent failures.
            return SendResult.failed(message.ref, f"the Bot API refused the bot token ({error})", transient=True)
        if "migrate_to_chat_id" in parameters:
            error += f" (the group is now chat {parameters['migrate_to_chat_id']})"
        return SendResult.failed(message.ref, error, transient=False)

    async def _chat_gate(self, chat: str) -> None:
        """Hold a message until a second has passed since the previous one to the same chat."""
        loop = asyncio.get_running_loop()
        now = loop.time()
        free_at = self._chat_free_at.get(chat, 0.0)
        if len(self._chat_free_at) >= _GATE_PRUNE_AT:
            self._chat_free_at = {c: t for c, t in self._chat_free_at.items() if t > now}
        start = max(now, free_at)
        self._chat_free_at[chat] = start + PER_CHAT_INTERVAL
        if start > now:
            await asyncio.sleep(start - now)

    async def check(self) -> None:
        try:
            response = await self._http().get(self._api + "getMe")
        except httpx.HTTPError as exc:
            raise ChannelCheckFailed(self._scrub(f"cannot reach the Bot API at {self.config.api_base_url}: "
                                                 f"{type(exc).__name__}: {exc}")) from None
        data = http_provider.json_object(response)
        if response.status_code == 401:
            raise ChannelCheckFailed("Telegram refused the bot token (401 Unauthorized): copy it again from "
                                     "BotFather")
        if data is None or data.get("ok") is not True or not isinstance(data.get("result"), dict):
            description = data.get("description") if data is not None else None
            raise ChannelCheckFailed(self._scrub(f"getMe failed: {response.status_code} "
                                                 f"{description or response.reason_phrase}"))
        username = data["result"].get("username")
        expected = self.config.bot_username
        if expected and (not isinstance(username, str) or username.lower() != expected.lower()):
            raise ChannelCheckFailed(f"the bot token belongs to @{username}, not @{expected}: fix bot_username "
                                     "(deep links would open the wrong bot)")

    # --- webhooks ---------------------------------------------------------------------------------------------

    @classmethod
    def webhook_account(cls, config: Any) -> str | None:
        secret = config.get("webhook_secret_token") if isinstance(config, dict) else \
            getattr(config, "webhook_secret_token", None)
        if secret is None:
            return None
        return secret_token_digest(secret.get_secret_value() if hasattr(secret, "get_secret_value") else str(secret))

    @classmethod
    def webhook_accounts_named(cls, request: WebhookRequest) -> list[str] | None:
        given = request.headers.get(SECRET_HEADER)
        return [secret_token_digest(given)] if given else []

    def verify_webhook(self, request: WebhookRequest) -> None:
        given = request.headers.get(SECRET_HEADER)
        if not given:
            raise WebhookRejected("the X-Telegram-Bot-Api-Secret-Token header is missing", status=401)
        expected = self.config.webhook_secret_token.get_secret_value()
        if not hmac.compare_digest(given.encode(), expected.encode()):
            raise WebhookRejected("the X-Telegram-Bot-Api-Secret-Token header does not match", status=401)

    def parse_webhook(self, request: WebhookRequest) -> WebhookResult:
        """One Update object (Telegram posts one per call): a text message becomes an InboundMessage, a
        my_chat_member change to `kicked` (the person blocked the bot) or back to `member` a ConsentReport.
        Other update kinds carry nothing for us."""
        try:
            update = json.loads(request.body)
        except (ValueError, UnicodeDecodeError):
            raise Invalid("the body is not JSON (a Telegram Update object)") from None
        if not isinstance(update, dict) or not isinstance(update.get("update_id"), int):
            raise Invalid("the body is not a Telegram Update object (no integer update_id)")
        result = WebhookResult()
        if "message" in update:
            message = _object(update["message"], "message")
            chat_id = _chat_of(message, "message")
            text = message.get("text", message.get("caption"))
            if isinstance(text, str) and text:
                result.inbound.append(InboundMessage(
                    from_address=chat_id, text=text, received_at=_timestamp(message.get("date")),
                    provider_message_id=f"{chat_id}:{message.get('message_id')}",
                    sender_name=_sender_name(message.get("from")),
                ))
        elif "my_chat_member" in update:
            change = _object(update["my_chat_member"], "my_chat_member")
            chat_id = _chat_of(change, "my_chat_member")
            private = change["chat"].get("type") == "private"
            new = _object(change.get("new_chat_member"), "my_chat_member.new_chat_member").get("status")
            old = (change.get("old_chat_member") or {}).get("status")
            occurred_at = _timestamp(change.get("date"))
            if new == "kicked":
                result.consent.append(ConsentReport(
                    address=chat_id, subscribed=False, occurred_at=occurred_at,
                    reason="bot blocked" if private else "bot removed from the chat"))
            elif new in ("member", "administrator") and old in ("kicked", "left"):
                result.consent.append(ConsentReport(
                    address=chat_id, subscribed=True, occurred_at=occurred_at,
                    reason="bot unblocked" if private else "bot added to the chat"))
        return result

    async def reply(self, to: InboundMessage, text: str) -> WebhookResponse | None:
        """Answer in the chat through sendMessage, as plain text. A failed reply is logged, not raised: the
        update it answers has been handled either way."""
        message = OutgoingMessage(ref="reply", to=to.from_address, channel="telegram",
                                  payload=TextPayload(text=text, fields={"parse_mode": None}))
        result = await self._send_one(self._http(), message)
        if not result.ok:
            logger.warning("telegram: the reply to chat %s failed: %s", to.from_address, result.error)
        return None


def _object(value: Any, where: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise Invalid(f"{where} is not an object")
    return value


def _chat_of(container: dict[str, Any], where: str) -> str:
    chat = _object(container.get("chat"), f"{where}.chat")
    chat_id = chat.get("id")
    if not isinstance(chat_id, int) or isinstance(chat_id, bool):
        raise Invalid(f"{where}.chat.id must be an integer")
    return str(chat_id)
