"""The Telegram Bot API provider against its sandbox (clarion.sandbox.telegram)."""

from __future__ import annotations

import json
from typing import Any

from clarion.delivery.channels.base import OutgoingMessage, TextPayload, WebhookRequest
from clarion.sandbox import telegram as sandbox
from clarion.sandbox.control import Failure, RecordedRequest, SandboxControl

WEBHOOK_URL = "https://clarion.example/webhooks/telegram"
CHAT_ID = "912345678"


def request_of(headers: dict[str, str], body: bytes) -> WebhookRequest:
    return WebhookRequest(method="POST", url=WEBHOOK_URL, headers={k.lower(): v for k, v in headers.items()},
                          query={}, body=body)


class TelegramHarness:
    slug = "telegram"
    channel = "telegram"
    webhook_statuses: tuple[str, ...] = ()  # the Bot API reports no delivery statuses
    receives_webhooks = True
    opts_out_at_send = True  # 403 Forbidden: bot was blocked by the user

    def sandbox(self) -> tuple[Any, SandboxControl]:
        control = SandboxControl()
        return sandbox.create_app(control), control

    def config(self, sandbox_url: str) -> dict[str, Any]:
        return {"bot_token": sandbox.DEFAULT_BOT_TOKEN, "bot_username": sandbox.DEFAULT_BOT_USERNAME,
                "webhook_secret_token": sandbox.DEFAULT_SECRET_TOKEN, "api_base_url": sandbox_url}

    def message(self, ref: str) -> OutgoingMessage:
        return OutgoingMessage(ref=ref, to=CHAT_ID, channel="telegram",
                               payload=TextPayload(text="<b>Spring sale</b>: 20% off &amp; free delivery today"))

    def assert_wire_format(self, request: RecordedRequest, message: OutgoingMessage) -> None:
        assert request.method == "POST"
        assert request.path == f"/bot{sandbox.DEFAULT_BOT_TOKEN}/sendMessage"
        assert request.headers["content-type"] == "application/json"
        assert isinstance(message.payload, TextPayload)
        assert json.loads(request.body) == {"chat_id": int(message.to), "text": message.payload.text,
                                            "parse_mode": "HTML"}

    def status_webhook(self, config: dict[str, Any], provider_message_id: str, status: str, *,
                       failure: Failure | None = None) -> WebhookRequest:
        raise AssertionError("Telegram reports no delivery statuses")

    def any_webhook(self, config: dict[str, Any]) -> WebhookRequest:
        headers, body = sandbox.signed_update(sandbox.message_update(int(CHAT_ID), "HELP"),
                                              config["webhook_secret_token"])
        return request_of(headers, body)

    def forged(self, request: WebhookRequest) -> WebhookRequest:
        headers = dict(request.headers)
        headers[sandbox.SECRET_HEADER.lower()] = headers[sandbox.SECRET_HEADER.lower()] + "x"
        return WebhookRequest(method=request.method, url=request.url, headers=headers, query=request.query,
                              body=request.body)


HARNESSES = [TelegramHarness()]
