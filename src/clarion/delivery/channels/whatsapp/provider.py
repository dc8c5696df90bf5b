"""WhatsApp Business messages through Meta's Cloud API (Graph API /{phone_number_id}/messages)."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import httpx

from clarion.delivery.channels import http_provider
from clarion.delivery.channels.base import (
    ChannelCheckFailed,
    InboundMessage,
    OutgoingMessage,
    ProviderContext,
    SendResult,
    TextPayload,
    WebhookRequest,
    WebhookResponse,
    WebhookResult,
)
from clarion.delivery.channels.whatsapp import webhooks
from clarion.delivery.channels.whatsapp.config import WhatsAppConfig
from clarion.delivery.channels.whatsapp.error_codes import ACCESS_TOKEN_INVALID, as_code, classify
from clarion.errors import field_error

logger = logging.getLogger("clarion.delivery.whatsapp")

_CHECK_FIELDS = "display_phone_number,verified_name,quality_rating,messaging_limit_tier"
# E.164 allows at most 15 digits; fewer than 7 is no phone number anywhere.
_MIN_DIGITS, _MAX_DIGITS = 7, 15


class _Refused(Exception):
    """A message the provider will not put on the wire (no request is made for it)."""


def _recipient(address: str) -> str:
    """The Cloud API's `to`: the number's digits, no "+"."""
    digits = address.strip().removeprefix("+")
    if not digits.isascii() or not digits.isdigit() or not _MIN_DIGITS <= len(digits) <= _MAX_DIGITS:
        raise _Refused(f"recipient {address!r} is not an E.164 phone number")
    return digits


def _message_body(message: OutgoingMessage) -> dict[str, Any]:
    payload = message.payload
    if not isinstance(payload, TextPayload):
        raise _Refused("the whatsapp channel sends text payloads (a template or a text), not email")
    body: dict[str, Any] = {"messaging_product": "whatsapp", "recipient_type": "individual",
                            "to": _recipient(message.to)}
    template = payload.fields.get("template")
    if template is not None:
        body["type"] = "template"
        body["template"] = _template(template)
    elif payload.text:
        # Free-form text is only delivered inside the 24-hour window a person's own message opens (replies).
        body["type"] = "text"
        body["text"] = {"body": payload.text}
    else:
        raise _Refused("the message has neither a template nor text")
    # Echoed on every status webhook of this message: status updates find their recipient even when the
    # send's response (and so the wamid) was lost.
    body["biz_opaque_callback_data"] = message.ref
    return body


def _template(template: Any) -> dict[str, Any]:
    if not isinstance(template, Mapping) or not isinstance(template.get("name"), str) or not template["name"]:
        raise _Refused("the WhatsApp template has no name")
    language = template.get("language")
    code = language.get("code") if isinstance(language, Mapping) else None
    if not isinstance(code, str) or not code:
        raise _Refused(f"the WhatsApp template {template['name']!r} has no language code")
    out: dict[str, Any] = {"name": template["name"], "language": {"code": code}}
    components = template.get("components")
    if components:
        out["components"] = components
    return out


def _graph_error(response: httpx.Response) -> tuple[int | None, str]:
    """(code, readable message) of a Graph API error response, whatever its body turned out to be."""
    error = (http_provider.json_object(response) or {}).get("error")
    if not isinstance(error, dict):
        text = response.text[:200].strip()
        return None, f"HTTP {response.status_code}" + (f": {text}" if text else "")
    code = as_code(error.get("code"))
    message = str(error.get("message") or "error")
    data = error.get("error_data")
    details = data.get("details") if isinstance(data, dict) else None
    described = f"HTTP {response.status_code} code {code}: {message}"
    if details and str(details) not in message:
        described += f" ({details})"
    if error.get("fbtrace_id"):
        described += f" [fbtrace_id {error['fbtrace_id']}]"
    return code, described


class WhatsAppProvider(http_provider.HttpChannelProvider[WhatsAppConfig]):
    slug = "whatsapp"
    channel = "whatsapp"
    config_schema = WhatsAppConfig
    # Cloud API default throughput per business phone number.
    default_rate_limit_per_second = 80.0
    webhook_name = "whatsapp"

    def __init__(self, config: WhatsAppConfig, context: ProviderContext | None = None) -> None:
        super().__init__(config, context)
        self._messages_url = config.graph_url(config.phone_number_id, "messages")

    def _client_options(self) -> dict[str, Any]:
        return {"headers": {"Authorization": f"Bearer {self.config.access_token.get_secret_value()}"}}

    # --- sending --------------------------------------------------------------------------------------------

    async def _send_one(self, client: httpx.AsyncClient, message: OutgoingMessage) -> SendResult:
        try:
            body = _message_body(message)
        except _Refused as exc:
            return SendResult.failed(message.ref, str(exc), transient=False)
        try:
            response = await client.post(self._messages_url, json=body)
        except httpx.HTTPError as exc:
            return SendResult.failed(message.ref, http_provider.transport_error(exc, "the WhatsApp API"),
                                     transient=True)
        if response.is_success:
            return SendResult.sent(message.ref, self._wamid(response, message.ref))
        return self._failure(message.ref, response)

    @staticmethod
    def _wamid(response: httpx.Response, ref: str) -> str | None:
        try:
            return str(response.json()["messages"][0]["id"])
        except (ValueError, LookupError, TypeError):
            # Meta took the message (2xx); statuses still find it through biz_opaque_callback_data.
            logger.warning("whatsapp: accepted %s without a message id in the response: %.200s", ref,
                           response.text)
            return None

    @staticmethod
    def _failure(ref: str, response: httpx.Response) -> SendResult:
        code, described = _graph_error(response)
        if code == ACCESS_TOKEN_INVALID:
            described = f"the access token was refused (expired or revoked): replace it in the channel " \
                        f"settings; {described}"
        outcome = classify(code, response.status_code)
        return SendResult.failed(
            ref, described, transient=outcome == "transient", opted_out=outcome == "opted_out",
            retry_after=http_provider.retry_after(response) if outcome == "transient" else None)

    async def check(self) -> None:
        url = self.config.graph_url(self.config.phone_number_id)
        try:
            response = await self._http().get(url, params={"fields": _CHECK_FIELDS})
        except httpx.HTTPError as exc:
            raise ChannelCheckFailed(
                f"WhatsApp check failed: cannot reach {self.config.api_base_url}: {type(exc).__name__}",
                errors=[field_error(["config", "api_base_url"], f"unreachable: {type(exc).__name__}")]) from exc
        if response.is_success:
            return
        code, described = _graph_error(response)
        if code == ACCESS_TOKEN_INVALID or response.status_code == 401:
            field, problem = "access_token", "the access token was refused (invalid, expired or revoked)"
        elif code == 100 or response.status_code == 404:
            field, problem = "phone_number_id", "no such phone number for this access token"
        else:
            field, problem = "access_token", "the Graph API refused the request"
        raise ChannelCheckFailed(f"WhatsApp check failed: {problem}: {described}",
                                 errors=[field_error(["config", field], problem)])

    async def reply(self, to: InboundMessage, text: str) -> WebhookResponse | None:
        # A person's message opens the 24-hour customer-service window, so free-form text is allowed.
        message = OutgoingMessage(ref=f"reply:{to.provider_message_id or to.from_address}",
                                  to=to.from_address, channel=self.channel, payload=TextPayload(text=text))
        [result] = await self.send([message])
        if not result.ok:
            # The webhook that carried the inbound message is still acknowledged: what it recorded (an
            # opt-out) stands even when the confirmation could not be sent.
            logger.warning("whatsapp: reply to %s failed: %s", to.from_address, result.error)
        return None

    # --- webhooks -------------------------------------------------------------------------------------------

    @classmethod
    def webhook_account(cls, config: Any) -> str | None:
        if isinstance(config, Mapping):
            value = config.get("phone_number_id")
            return str(value) if value else None
        return config.phone_number_id

    @classmethod
    def webhook_accounts_named(cls, request: WebhookRequest) -> list[str] | None:
        return webhooks.accounts_named(request)

    def handshake(self, request: WebhookRequest) -> WebhookResponse | None:
        return webhooks.handshake(request, self.config)

    def verify_webhook(self, request: WebhookRequest) -> None:
        webhooks.verify_signature(request, self.config)

    def parse_webhook(self, request: WebhookRequest) -> WebhookResult:
        return webhooks.parse(request, self.config)
