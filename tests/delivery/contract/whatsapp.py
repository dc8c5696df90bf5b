"""The WhatsApp Cloud API provider against its sandbox."""

from __future__ import annotations

from typing import Any

from clarion.delivery.channels.base import (
    STATUS_DELIVERED,
    STATUS_FAILED,
    STATUS_READ,
    STATUS_SENT,
    OutgoingMessage,
    TextPayload,
    WebhookRequest,
)
from clarion.sandbox import whatsapp as sandbox
from clarion.sandbox.control import Failure, RecordedRequest, SandboxControl

ACCOUNT = sandbox.SandboxAccount(phone_number_id="109876543210987", access_token="contract-token",
                                 app_secret="contract-app-secret", verify_token="contract-verify")
TEMPLATE = {"name": "spring_sale", "language": {"code": "en_US"},
            "components": [{"type": "body", "parameters": [{"type": "text", "text": "Ada"}]}]}
# What each kind of failure looks like in a failed status webhook.
FAILURE_CODES: dict[Failure, int] = {"transient": 130429, "permanent": 131026, "opt_out": 131050}


def account_of(config: dict[str, Any]) -> sandbox.SandboxAccount:
    return sandbox.SandboxAccount(phone_number_id=config["phone_number_id"],
                                  access_token=config["access_token"], app_secret=config["app_secret"],
                                  verify_token=config["verify_token"])


def webhook_request(headers: dict[str, str], body: bytes) -> WebhookRequest:
    return WebhookRequest(method="POST", url="https://clarion.example/webhooks/whatsapp",
                          headers={k.lower(): v for k, v in headers.items()}, query={}, body=body)


class WhatsAppHarness:
    slug = "whatsapp"
    channel = "whatsapp"
    webhook_statuses = (STATUS_SENT, STATUS_DELIVERED, STATUS_READ, STATUS_FAILED)
    receives_webhooks = True
    # 131050 arrives in a failed status webhook, never in the send response.
    opts_out_at_send = False

    def sandbox(self) -> tuple[Any, SandboxControl]:
        control = SandboxControl()
        return sandbox.create_app(control, ACCOUNT, status_delay_seconds=0.01), control

    def config(self, sandbox_url: str) -> dict[str, Any]:
        return ACCOUNT.channel_config(sandbox_url)

    def message(self, ref: str) -> OutgoingMessage:
        return OutgoingMessage(ref=ref, to="+447700900123", channel="whatsapp",
                               payload=TextPayload(text="", fields={"template": TEMPLATE}))

    def assert_wire_format(self, request: RecordedRequest, message: OutgoingMessage) -> None:
        assert request.method == "POST"
        assert request.path == f"/v21.0/{ACCOUNT.phone_number_id}/messages"
        assert request.headers["authorization"] == f"Bearer {ACCOUNT.access_token}"
        assert request.headers["content-type"] == "application/json"
        assert request.data == {
            "messaging_product": "whatsapp", "recipient_type": "individual", "to": "447700900123",
            "type": "template", "template": TEMPLATE, "biz_opaque_callback_data": message.ref,
        }

    def status_webhook(self, config: dict[str, Any], provider_message_id: str, status: str, *,
                       failure: Failure | None = None) -> WebhookRequest:
        account = account_of(config)
        payload = sandbox.status_payload(
            account, provider_message_id, status, recipient_id="447700900123", ref="r1",
            error_code=FAILURE_CODES[failure or "permanent"] if status == STATUS_FAILED else None)
        return webhook_request(*sandbox.signed_call(payload, account.app_secret))

    def any_webhook(self, config: dict[str, Any]) -> WebhookRequest:
        account = account_of(config)
        payload = sandbox.inbound_text_payload(account, "+447700900123", "STOP")
        return webhook_request(*sandbox.signed_call(payload, account.app_secret))

    def forged(self, request: WebhookRequest) -> WebhookRequest:
        # Same signature, different body: what an attacker replaying a captured signature would send.
        body = request.body.replace(b"STOP", b"START") if b"STOP" in request.body else request.body + b" "
        return WebhookRequest(method=request.method, url=request.url, headers=request.headers,
                              query=request.query, body=body)


HARNESSES = [WhatsAppHarness()]
