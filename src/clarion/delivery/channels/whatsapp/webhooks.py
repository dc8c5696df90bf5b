"""Cloud API webhooks: the GET verification handshake, X-Hub-Signature-256, and the `messages` and
`user_preferences` change payloads."""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Iterator, Mapping
from datetime import UTC, datetime
from typing import Any

from clarion.delivery.channels.base import (
    STATUS_DELIVERED,
    STATUS_FAILED,
    STATUS_READ,
    STATUS_SENT,
    ConsentReport,
    InboundMessage,
    StatusUpdate,
    WebhookRejected,
    WebhookRequest,
    WebhookResponse,
    WebhookResult,
)
from clarion.delivery.channels.whatsapp.config import WhatsAppConfig
from clarion.delivery.channels.whatsapp.error_codes import as_code, classify
from clarion.errors import Invalid

SIGNATURE_HEADER = "x-hub-signature-256"
_SIGNATURE_PREFIX = "sha256="
_STATUSES = {"sent": STATUS_SENT, "delivered": STATUS_DELIVERED, "read": STATUS_READ, "failed": STATUS_FAILED}


def expected_signature(body: bytes, app_secret: str) -> str:
    return _SIGNATURE_PREFIX + hmac.new(app_secret.encode(), body, hashlib.sha256).hexdigest()


def verify_signature(request: WebhookRequest, config: WhatsAppConfig) -> None:
    given = request.headers.get(SIGNATURE_HEADER)
    if not given:
        raise WebhookRejected("the call carries no X-Hub-Signature-256 header")
    expected = expected_signature(request.body, config.app_secret.get_secret_value())
    # Bytes, not str: compare_digest refuses non-ASCII str, and a forged header may carry anything.
    if not hmac.compare_digest(expected.encode(), given.strip().lower().encode("utf-8", "replace")):
        raise WebhookRejected("X-Hub-Signature-256 does not match the body signed with this app's secret")


def handshake(request: WebhookRequest, config: WhatsAppConfig) -> WebhookResponse | None:
    """Meta's subscription check: GET ?hub.mode=subscribe&hub.verify_token=…&hub.challenge=…, answered with the
    challenge when the token is this account's."""
    if request.method.upper() != "GET" or request.query.get("hub.mode") != "subscribe":
        return None
    token = request.query.get("hub.verify_token", "")
    challenge = request.query.get("hub.challenge")
    if challenge is None:
        return None
    if not hmac.compare_digest(token.encode(), config.verify_token.get_secret_value().encode()):
        return None
    return WebhookResponse(status=200, body=challenge.encode(), media_type="text/plain")


def _load(body: bytes) -> dict[str, Any]:
    try:
        payload = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise Invalid(f"the WhatsApp webhook body is not JSON: {exc}") from None
    if not isinstance(payload, dict) or payload.get("object") != "whatsapp_business_account":
        raise Invalid('the WhatsApp webhook body lacks "object": "whatsapp_business_account"')
    if not isinstance(payload.get("entry"), list):
        raise Invalid('the WhatsApp webhook body lacks an "entry" list')
    return payload


def _changes(payload: Mapping[str, Any]) -> Iterator[tuple[str, Mapping[str, Any]]]:
    """(field, value) of every well-formed change; anything else Meta may add is skipped, not refused."""
    for entry in payload["entry"]:
        if not isinstance(entry, dict) or not isinstance(entry.get("changes"), list):
            continue
        for change in entry["changes"]:
            if isinstance(change, dict) and isinstance(change.get("value"), dict):
                yield str(change.get("field", "")), change["value"]


def _phone_number_id(value: Mapping[str, Any]) -> str | None:
    metadata = value.get("metadata")
    if isinstance(metadata, dict) and metadata.get("phone_number_id") is not None:
        return str(metadata["phone_number_id"])
    return None


def accounts_named(request: WebhookRequest) -> list[str] | None:
    if request.method.upper() != "POST":
        return None
    named = {pid for _, value in _changes(_load(request.body)) if (pid := _phone_number_id(value))}
    # A call naming no phone number (a template status or account update, keyed by the business account)
    # leaves every account a candidate: the signature then picks the app it came from.
    return sorted(named) or None


def _list(value: Mapping[str, Any], key: str) -> list[Any]:
    items = value.get(key)
    if items is None:
        return []
    if not isinstance(items, list):
        raise Invalid(f'"{key}" in a WhatsApp webhook change must be a list')
    return items


def _required(item: Any, key: str, where: str) -> str:
    if not isinstance(item, dict):
        raise Invalid(f"each of {where} in a WhatsApp webhook must be an object")
    value = item.get(key)
    if not isinstance(value, str | int) or isinstance(value, bool) or value == "":
        raise Invalid(f'each of {where} in a WhatsApp webhook needs "{key}"')
    return str(value)


def _timestamp(item: Mapping[str, Any], where: str) -> datetime:
    raw = item.get("timestamp")
    problem = Invalid(f'each of {where} in a WhatsApp webhook needs a unix "timestamp", got {raw!r}')
    if isinstance(raw, bool) or not isinstance(raw, int | str):
        raise problem
    try:
        return datetime.fromtimestamp(int(raw), UTC)
    except (ValueError, OverflowError, OSError):
        raise problem from None


def _object(value: Any) -> Mapping[str, Any]:
    """A nested object of the payload, or an empty one where Meta's shape is not met (tolerant reading)."""
    return value if isinstance(value, dict) else {}


def _e164(wa_id: str) -> str:
    return wa_id if wa_id.startswith("+") else "+" + wa_id


def _status(item: Mapping[str, Any]) -> StatusUpdate | None:
    wamid = _required(item, "id", "statuses")
    status = _STATUSES.get(_required(item, "status", "statuses"))
    if status is None:
        return None  # "deleted", "warning", "played": nothing a campaign recipient tracks
    occurred_at = _timestamp(item, "statuses")
    ref = item.get("biz_opaque_callback_data")
    error_code = error = None
    transient = opted_out = False
    if status == STATUS_FAILED:
        errors = item.get("errors")
        first = _object(errors[0]) if isinstance(errors, list) and errors else {}
        code = as_code(first.get("code"))
        error_code = str(code) if code is not None else None
        error = _describe(first) or "failed without an error from WhatsApp"
        outcome = classify(code)
        transient, opted_out = outcome == "transient", outcome == "opted_out"
    return StatusUpdate(provider_message_id=wamid, status=status, occurred_at=occurred_at,
                        error_code=error_code, error=error, ref=str(ref) if ref else None,
                        transient=transient, opted_out=opted_out, raw=dict(item))


def _describe(error: Mapping[str, Any]) -> str:
    title = str(error.get("title") or error.get("message") or "")
    details = str(_object(error.get("error_data")).get("details") or "")
    parts = [p for p in (f"({error['code']})" if "code" in error else "", title, details and f"- {details}") if p]
    return " ".join(parts)


def _inbound_text(item: Mapping[str, Any]) -> str | None:
    kind = item.get("type")
    body: Any = None
    if kind == "text":
        body = _object(item.get("text")).get("body")
    elif kind == "button":  # a template's quick-reply button ("Stop promotions")
        body = _object(item.get("button")).get("text")
    elif kind == "interactive":
        reply = _object(item.get("interactive"))
        body = _object(reply.get("button_reply") or reply.get("list_reply")).get("title")
    return body if isinstance(body, str) else None


def parse(request: WebhookRequest, config: WhatsAppConfig) -> WebhookResult:
    payload = _load(request.body)
    result = WebhookResult()
    for field, value in _changes(payload):
        if _phone_number_id(value) != config.phone_number_id:
            continue
        names = {str(c["wa_id"]): _object(c.get("profile")).get("name")
                 for c in _list(value, "contacts") if isinstance(c, dict) and c.get("wa_id")}
        if field == "messages":
            for item in _list(value, "statuses"):
                update = _status(item)
                if update is not None:
                    result.statuses.append(update)
            for item in _list(value, "messages"):
                sender = _required(item, "from", "messages")
                received_at = _timestamp(item, "messages")
                text = _inbound_text(item)
                if text is None:
                    continue  # media, locations, reactions: no keyword to act on
                name = names.get(sender)
                result.inbound.append(InboundMessage(
                    from_address=_e164(sender), text=text, received_at=received_at,
                    provider_message_id=str(item["id"]) if item.get("id") else None,
                    sender_name=name if isinstance(name, str) else None))
        elif field == "user_preferences":
            for item in _list(value, "user_preferences"):
                wa_id = _required(item, "wa_id", "user_preferences")
                choice = item.get("value")
                if choice not in ("stop", "resume"):
                    continue
                detail = item.get("detail")
                category = item.get("category") or "marketing_messages"
                result.consent.append(ConsentReport(
                    address=_e164(wa_id), subscribed=choice == "resume",
                    reason=str(detail) if detail else f"whatsapp {category}: {choice}",
                    occurred_at=_timestamp(item, "user_preferences")))
    return result
