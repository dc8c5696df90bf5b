"""The Web Push provider against its sandbox push service (clarion.sandbox.webpush), which also plays the browser:
it makes the subscriptions and decrypts what arrives."""

from __future__ import annotations

import json
from typing import Any

from clarion.delivery.channels.base import OutgoingMessage, TextPayload, WebhookRequest
from clarion.delivery.channels.webpush.keys import generate_vapid_keys
from clarion.sandbox import webpush as sandbox
from clarion.sandbox.control import Failure, RecordedRequest, SandboxControl

KEYS = generate_vapid_keys()
SUBJECT = "mailto:push@shop.example"


class WebPushHarness:
    slug = "webpush"
    channel = "push"
    webhook_statuses: tuple[str, ...] = ()
    receives_webhooks = False
    opts_out_at_send = True  # 410 Gone for the contact's only subscription

    def __init__(self) -> None:
        self.service = sandbox.PushService()
        self.base_url = "http://127.0.0.1:9"

    def sandbox(self) -> tuple[Any, SandboxControl]:
        control = SandboxControl()
        self.service = sandbox.PushService()
        return sandbox.create_app(control, self.service), control

    def config(self, sandbox_url: str) -> dict[str, Any]:
        self.base_url = sandbox_url
        return {"vapid_private_key": KEYS["vapid_private_key"], "vapid_subject": SUBJECT, "ttl": 3600}

    def message(self, ref: str) -> OutgoingMessage:
        subscription = self.service.subscribe(self.base_url, application_server_key=KEYS["vapid_public_key"])
        return OutgoingMessage(ref=ref, to="7f0c1d2e-0000-4000-8000-000000000001", channel="push", payload=TextPayload(
            text="20% off everything today", fields={"title": "Spring sale", "url": "https://shop.example/sale",
                                                     "subscriptions": [subscription.to_json()]}))

    def assert_wire_format(self, request: RecordedRequest, message: OutgoingMessage) -> None:
        assert isinstance(message.payload, TextPayload)
        [subscription] = message.payload.fields["subscriptions"]
        assert request.method == "POST" and subscription["endpoint"].endswith(request.path)
        assert request.headers["content-encoding"] == "aes128gcm"
        assert request.headers["ttl"] == "3600"
        assert request.headers["authorization"].startswith("vapid t=")
        assert f"k={KEYS['vapid_public_key']}" in request.headers["authorization"]
        # The sandbox decrypted it with the browser's private key: this is what the service worker gets.
        [received] = self.service.received
        assert received.json() == {"title": "Spring sale", "body": message.payload.text,
                                   "url": "https://shop.example/sale"}
        assert received.claims["sub"] == SUBJECT and received.claims["aud"] == self.base_url
        assert json.loads(received.payload)  # well-formed JSON, not just bytes

    def status_webhook(self, config: dict[str, Any], provider_message_id: str, status: str, *,
                       failure: Failure | None = None) -> WebhookRequest:
        raise AssertionError("Web Push has no status webhooks")

    def any_webhook(self, config: dict[str, Any]) -> WebhookRequest:
        raise AssertionError("Web Push has no webhooks")

    def forged(self, request: WebhookRequest) -> WebhookRequest:
        raise AssertionError("Web Push has no webhooks")


HARNESSES = [WebPushHarness()]
