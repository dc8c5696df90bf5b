"""The Twilio SMS provider against its sandbox (clarion.sandbox.twilio)."""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qs

from clarion.delivery.channels.base import (
    STATUS_DELIVERED,
    STATUS_FAILED,
    STATUS_SENT,
    OutgoingMessage,
    TextPayload,
    WebhookRequest,
)
from clarion.sandbox import twilio as sandbox
from clarion.sandbox.control import Failure, RecordedRequest, SandboxControl

WEBHOOK_URL = "https://clarion.example/webhooks/twilio/status"
# The error a failed status callback carries for each kind of failure (Twilio's codes).
FAILURE_CODES: dict[Failure, tuple[str, int]] = {
    "transient": ("undelivered", 30001),  # queue overflow
    "permanent": ("undelivered", 30005),  # unknown destination handset
    "opt_out": ("failed", 21610),  # the person replied STOP
}
_OUR_STATUS_AS_TWILIO = {STATUS_SENT: "sent", STATUS_DELIVERED: "delivered", STATUS_FAILED: "failed"}


def request_of(url: str, headers: dict[str, str], body: bytes) -> WebhookRequest:
    return WebhookRequest(method="POST", url=url, headers={k.lower(): v for k, v in headers.items()}, query={},
                          body=body)


class TwilioHarness:
    slug = "twilio"
    channel = "sms"
    webhook_statuses = (STATUS_SENT, STATUS_DELIVERED, STATUS_FAILED)
    receives_webhooks = True
    opts_out_at_send = True

    def sandbox(self) -> tuple[Any, SandboxControl]:
        control = SandboxControl()
        return sandbox.create_app(control), control

    def config(self, sandbox_url: str) -> dict[str, Any]:
        return {"account_sid": sandbox.DEFAULT_ACCOUNT_SID, "auth_token": sandbox.DEFAULT_AUTH_TOKEN,
                "from_number": sandbox.DEFAULT_NUMBER, "api_base_url": sandbox_url,
                "status_callback_url": WEBHOOK_URL}

    def message(self, ref: str) -> OutgoingMessage:
        return OutgoingMessage(ref=ref, to="+14155550123", channel="sms",
                               payload=TextPayload(text="Spring sale: 20% off today. Reply STOP to opt out"))

    def assert_wire_format(self, request: RecordedRequest, message: OutgoingMessage) -> None:
        assert request.method == "POST"
        assert request.path == f"/2010-04-01/Accounts/{sandbox.DEFAULT_ACCOUNT_SID}/Messages.json"
        assert request.headers["content-type"] == "application/x-www-form-urlencoded"
        assert request.headers["authorization"].startswith("Basic ")
        form = {k: v[0] for k, v in parse_qs(request.body.decode()).items()}
        assert isinstance(message.payload, TextPayload)
        assert form == {"To": message.to, "From": sandbox.DEFAULT_NUMBER, "Body": message.payload.text,
                        "StatusCallback": f"{WEBHOOK_URL}?clarion_ref={message.ref}"}

    def status_webhook(self, config: dict[str, Any], provider_message_id: str, status: str, *,
                       failure: Failure | None = None) -> WebhookRequest:
        twilio_status, code = _OUR_STATUS_AS_TWILIO[status], None
        if status == STATUS_FAILED:
            twilio_status, code = FAILURE_CODES[failure or "permanent"]
        headers, body = sandbox.status_callback(WEBHOOK_URL, account_sid=config["account_sid"],
                                                auth_token=config["auth_token"], message_sid=provider_message_id,
                                                status=twilio_status, error_code=code)
        return request_of(WEBHOOK_URL, headers, body)

    def any_webhook(self, config: dict[str, Any]) -> WebhookRequest:
        url = "https://clarion.example/webhooks/twilio/inbound"
        headers, body = sandbox.inbound_message(url, account_sid=config["account_sid"],
                                                auth_token=config["auth_token"], sender="+14155550123", body="HELP")
        return request_of(url, headers, body)

    def forged(self, request: WebhookRequest) -> WebhookRequest:
        # Same signature, one parameter changed: what an attacker replaying a captured signature would send.
        body = request.body.replace(b"Body=HELP", b"Body=STOP").replace(b"MessageStatus=", b"MessageStatus=x")
        assert body != request.body
        return WebhookRequest(method=request.method, url=request.url, headers=request.headers, query=request.query,
                              body=body)


HARNESSES = [TwilioHarness()]
