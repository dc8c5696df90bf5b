"""A Telegram Bot API sandbox: the methods Clarion calls, with the Bot API's validation, result and error shapes,
and builders for the webhook updates Telegram posts to a bot.

    POST|GET /bot<token>/getMe          the bot's User object (the credentials check)
    POST|GET /bot<token>/sendMessage    chat_id, text, parse_mode (JSON, form or query) → the sent Message

Every answer is {"ok": true, "result": …} or {"ok": false, "error_code", "description"[, "parameters"]}. A wrong
token is 401 Unauthorized, an unknown method 404 Not Found. sendMessage refuses what Telegram refuses: no
chat_id, no text, text over 4,096 characters after entity parsing, HTML that Telegram cannot parse (unsupported
or unclosed tags), a chat that is not a numeric chat id (the sandbox knows only private chats by id).
fail_next("transient") answers 429 with parameters.retry_after, "permanent" 400 chat not found, "opt_out" 403 bot
was blocked by the user.

Telegram reports no delivery statuses, so the sandbox posts no callbacks; `message_update` / `chat_member_update`
and `signed_update` build the updates a bot's webhook receives (what a person typing /start, STOP or blocking the
bot produces), with the secret-token header Telegram adds.
"""

from __future__ import annotations

import html
import itertools
import json
import re
import time
from typing import Any
from urllib.parse import parse_qsl

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from clarion.sandbox.control import SandboxControl

DEFAULT_BOT_TOKEN = "7000000001:AAHsandboxSANDBOXsandboxSANDBOX12345"
DEFAULT_BOT_USERNAME = "clarion_sandbox_bot"
DEFAULT_SECRET_TOKEN = "sandbox-secret_token"
SECRET_HEADER = "X-Telegram-Bot-Api-Secret-Token"
MAX_TEXT = 4096
RETRY_AFTER_SECONDS = 3

# Telegram's HTML: these tags (and their attributes) only; anything else is "Unsupported start tag".
_HTML_TAGS = {"b", "strong", "i", "em", "u", "ins", "s", "strike", "del", "span", "tg-spoiler", "a", "tg-emoji",
              "code", "pre", "blockquote"}
_TAG = re.compile(r"<(/?)([A-Za-z][A-Za-z0-9-]*)?([^<>]*)(>?)")
_ENTITY = re.compile(r"&(?:#\d+|#x[0-9a-fA-F]+|lt|gt|amp|quot);")
_update_ids = itertools.count(100_000)


def _error(status: int, description: str, parameters: dict[str, Any] | None = None) -> JSONResponse:
    body: dict[str, Any] = {"ok": False, "error_code": status, "description": description}
    if parameters:
        body["parameters"] = parameters
    return JSONResponse(body, status_code=status)


def parse_entities(text: str, parse_mode: str | None) -> tuple[str | None, str | None]:
    """(the text a user sees, None) or (None, the Bot API's error description) for `text` in `parse_mode`."""
    if parse_mode != "HTML":
        return text, None
    plain: list[str] = []
    open_tags: list[str] = []
    position = 0
    for match in _TAG.finditer(text):
        plain.append(text[position:match.start()])
        position = match.end()
        closing, name, _, end = match.groups()
        offset = len(text[:match.start()].encode())
        if not name or not end:
            return None, f"Bad Request: can't parse entities: Unexpected character at byte offset {offset}"
        name = name.lower()
        if name not in _HTML_TAGS:
            return None, f'Bad Request: can\'t parse entities: Unsupported start tag "{name}" at byte offset {offset}'
        if closing:
            if not open_tags or open_tags[-1] != name:
                expected = f'"</{open_tags[-1]}>"' if open_tags else "no end tag"
                return None, (f"Bad Request: can't parse entities: Unmatched end tag at byte offset {offset}, "
                              f'expected {expected}, found "</{name}>"')
            open_tags.pop()
        else:
            open_tags.append(name)
    if open_tags:
        return None, f'Bad Request: can\'t parse entities: Can\'t find end tag corresponding to start tag "{open_tags[-1]}"'
    plain.append(text[position:])
    visible = "".join(plain)
    stray = re.search(r"&(?![A-Za-z#0-9]+;)", visible)
    if stray is None:
        stray = next((m for m in re.finditer(r"&[A-Za-z#0-9]+;", visible) if not _ENTITY.fullmatch(m.group())), None)
    if stray is not None:
        offset = len(visible[:stray.start()].encode())
        return None, f"Bad Request: can't parse entities: Unsupported HTML entity at byte offset {offset}"
    return html.unescape(visible), None


def _utf16_length(text: str) -> int:
    return len(text.encode("utf-16-le")) // 2


class _TelegramSandbox:
    def __init__(self, control: SandboxControl, bot_token: str, bot_username: str) -> None:
        self.control = control
        self.bot_token = bot_token
        self.bot = {"id": int(bot_token.split(":", 1)[0]), "is_bot": True, "first_name": "Clarion Sandbox",
                    "username": bot_username, "can_join_groups": True, "can_read_all_group_messages": False,
                    "supports_inline_queries": False}
        self._message_ids: dict[int, itertools.count[int]] = {}

    async def _params(self, request: Request) -> tuple[bytes, dict[str, Any]]:
        body = await request.body()
        params: dict[str, Any] = dict(request.query_params)
        content_type = request.headers.get("content-type", "")
        if body and content_type.startswith("application/json"):
            data = json.loads(body)
            if isinstance(data, dict):
                params.update(data)
        elif body:
            params.update(parse_qsl(body.decode(), keep_blank_values=True))
        return body, params

    async def call(self, request: Request) -> JSONResponse:
        try:
            body, params = await self._params(request)
        except (ValueError, UnicodeDecodeError):
            return _error(400, "Bad Request: can't parse JSON object")
        self.control.record(request, body, params)
        await self.control.pause()
        if request.path_params["token"] != self.bot_token:
            return _error(401, "Unauthorized")
        method = request.path_params["method"].lower()
        if method == "getme":
            return JSONResponse({"ok": True, "result": self.bot})
        if method == "sendmessage":
            return self._send_message(params)
        return _error(404, "Not Found")

    def _send_message(self, params: dict[str, Any]) -> JSONResponse:
        failure = self.control.next_failure()
        if failure == "transient":
            return _error(429, f"Too Many Requests: retry after {RETRY_AFTER_SECONDS}",
                          {"retry_after": RETRY_AFTER_SECONDS})
        if failure == "permanent":
            return _error(400, "Bad Request: chat not found")
        if failure == "opt_out":
            return _error(403, "Forbidden: bot was blocked by the user")
        chat_id = params.get("chat_id")
        if chat_id is None or str(chat_id) == "":
            return _error(400, "Bad Request: chat_id is empty")
        text = params.get("text")
        if not isinstance(text, str) or not text:
            return _error(400, "Bad Request: message text is empty")
        parse_mode = params.get("parse_mode") or None
        if parse_mode not in (None, "HTML", "Markdown", "MarkdownV2"):
            return _error(400, "Bad Request: unsupported parse_mode")
        visible, problem = parse_entities(text, parse_mode)
        if problem:
            return _error(400, problem)
        assert visible is not None
        if not visible.strip():
            return _error(400, "Bad Request: message text is empty")
        if _utf16_length(visible) > MAX_TEXT:
            return _error(400, "Bad Request: message is too long")
        if isinstance(chat_id, bool) or not re.fullmatch(r"-?\d{1,20}", str(chat_id)):
            return _error(400, "Bad Request: chat not found")
        chat = int(chat_id)
        counter = self._message_ids.setdefault(chat, itertools.count(1))
        result = {
            "message_id": next(counter),
            "from": {k: self.bot[k] for k in ("id", "is_bot", "first_name", "username")},
            "chat": {"id": chat, "type": "private", "first_name": "Sandbox"} if chat > 0 else
                    {"id": chat, "type": "supergroup", "title": "Sandbox group"},
            "date": int(time.time()),
            "text": visible,
        }
        return JSONResponse({"ok": True, "result": result})


def create_app(control: SandboxControl, *, bot_token: str = DEFAULT_BOT_TOKEN,
               bot_username: str = DEFAULT_BOT_USERNAME) -> Starlette:
    sandbox = _TelegramSandbox(control, bot_token, bot_username)
    app = Starlette(routes=[Route("/bot{token}/{method}", sandbox.call, methods=["GET", "POST"])])
    app.state.sandbox = sandbox
    return app


# --- webhook updates, as Telegram posts them to the bot's webhook (for tests and the demo) -------------------

def _user(chat_id: int, first_name: str, username: str | None) -> dict[str, Any]:
    user: dict[str, Any] = {"id": chat_id, "is_bot": False, "first_name": first_name, "language_code": "en"}
    if username:
        user["username"] = username
    return user


def message_update(chat_id: int, text: str, *, first_name: str = "Ann", username: str | None = None,
                   message_id: int = 1, date: int | None = None) -> dict[str, Any]:
    """An Update carrying a private-chat text message from a person (`/start <payload>`, `STOP`, …)."""
    user = _user(chat_id, first_name, username)
    message: dict[str, Any] = {
        "message_id": message_id, "from": user,
        "chat": {"id": chat_id, "first_name": first_name, "type": "private", **({"username": username} if username
                                                                                else {})},
        "date": date if date is not None else int(time.time()), "text": text,
    }
    if text.startswith("/"):
        command = text.split(" ", 1)[0]
        message["entities"] = [{"offset": 0, "length": len(command), "type": "bot_command"}]
    return {"update_id": next(_update_ids), "message": message}


def chat_member_update(chat_id: int, *, old: str, new: str, bot_id: int = 7000000001,
                       bot_username: str = DEFAULT_BOT_USERNAME, first_name: str = "Ann",
                       date: int | None = None) -> dict[str, Any]:
    """An Update saying the bot's status in a private chat changed: new="kicked" when the person blocks the bot,
    old="kicked", new="member" when they unblock it."""
    bot = {"id": bot_id, "is_bot": True, "first_name": "Clarion Sandbox", "username": bot_username}
    return {"update_id": next(_update_ids), "my_chat_member": {
        "chat": {"id": chat_id, "first_name": first_name, "type": "private"},
        "from": _user(chat_id, first_name, None),
        "date": date if date is not None else int(time.time()),
        "old_chat_member": {"user": bot, "status": old},
        "new_chat_member": {"user": bot, "status": new, **({"until_date": 0} if new == "kicked" else {})},
    }}


def signed_update(update: dict[str, Any], secret_token: str = DEFAULT_SECRET_TOKEN) -> tuple[dict[str, str], bytes]:
    """Headers and body of the POST Telegram makes to a webhook set with `secret_token`."""
    headers = {"content-type": "application/json", SECRET_HEADER.lower(): secret_token}
    return headers, json.dumps(update, separators=(",", ":")).encode()
