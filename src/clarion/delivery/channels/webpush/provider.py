"""Web Push (RFC 8030) with message encryption (RFC 8291, aes128gcm) and VAPID (RFC 8292).

A message is addressed to a contact (OutgoingMessage.to = the contact id) and carries the contact's browser
subscriptions in TextPayload.fields["subscriptions"] ([{"endpoint", "keys": {"p256dh", "auth"}}], filled by the
pipeline); it goes to every one of them. The notification is the JSON {"title", "body", "url", "icon"} (keys
without a value left out) that the site's service worker shows: body is the rendered text, the rest come from
fields.

pywebpush encrypts and py_vapid signs; the requests go out on this provider's own httpx client (pywebpush's
sender blocks). A VAPID token is signed once per push service origin and reused until it nears expiry.

Outcome per message: sent when any subscription took it (201). A subscription that answers 404 or 410 is gone:
its endpoint is reported in SendResult.expired_addresses for the pipeline to delete, and when every subscription
of the contact is gone the result is opted_out. 429/5xx and network trouble are transient (Retry-After
honoured), other 4xx (400, 413, a refused VAPID token) permanent.
"""

from __future__ import annotations

import hashlib
import json
import time
import uuid
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import httpx
from pywebpush import WebPusher

from clarion.delivery.channels import http_provider
from clarion.delivery.channels.base import (
    ChannelCheckFailed,
    OutgoingMessage,
    ProviderContext,
    SendResult,
    TextPayload,
)
from clarion.delivery.channels.webpush.config import WebPushConfig
from clarion.delivery.channels.webpush.keys import load_private_key

# aes128gcm with one record: a 86-byte header (salt, record size, key id = our 65-byte public key), a 16-byte tag
# and the 1-byte padding delimiter around the plaintext; push services take 4,096 bytes of body.
MAX_BODY = 4096
MAX_PAYLOAD = MAX_BODY - 86 - 16 - 1
VAPID_TOKEN_SECONDS = 12 * 3600  # RFC 8292 allows up to 24 hours
VAPID_RENEW_SECONDS = 3600  # a cached token with less left than this is signed again
NOTIFICATION_FIELDS = ("title", "url", "icon")
_MAX_ID = 255  # campaign_recipients.provider_message_id


@dataclass(frozen=True, slots=True)
class _Delivery:
    """What one push service said about one subscription."""

    kind: str  # ok | gone | transient | permanent
    detail: str = ""
    location: str | None = None
    retry_after: float | None = None


def notification(payload: TextPayload) -> bytes:
    """The JSON a service worker receives: body is the text; title, url and icon come from the fields."""
    data: dict[str, Any] = {}
    if payload.fields.get("title"):
        data["title"] = str(payload.fields["title"])
    data["body"] = payload.text
    for name in NOTIFICATION_FIELDS[1:]:
        if payload.fields.get(name):
            data[name] = str(payload.fields[name])
    return json.dumps(data, ensure_ascii=False, separators=(",", ":")).encode()


def _origin(endpoint: str) -> str:
    parts = urlsplit(endpoint)
    return f"{parts.scheme}://{parts.netloc}"


def _message_id(location: str | None) -> str:
    if not location:
        return uuid.uuid4().hex
    return location if len(location) <= _MAX_ID else hashlib.sha256(location.encode()).hexdigest()


class WebPushProvider(http_provider.HttpChannelProvider[WebPushConfig]):
    slug = "webpush"
    channel = "push"
    config_schema = WebPushConfig
    connect_timeout = 5.0

    def __init__(self, config: WebPushConfig, context: ProviderContext | None = None) -> None:
        super().__init__(config, context)
        self._vapid = load_private_key(config.vapid_private_key.get_secret_value())
        # push service origin → (Authorization header, unix time it stops being reused)
        self._tokens: dict[str, tuple[str, float]] = {}
        self._headers = {"TTL": str(config.ttl), "Content-Encoding": "aes128gcm",
                         "Content-Type": "application/octet-stream", "Urgency": config.urgency}

    def _authorization(self, origin: str) -> str:
        now = time.time()
        cached = self._tokens.get(origin)
        if cached is not None and cached[1] > now:
            return cached[0]
        expires = int(now) + VAPID_TOKEN_SECONDS
        header = self._vapid.sign({"aud": origin, "exp": expires, "sub": self.config.vapid_subject})["Authorization"]
        self._tokens[origin] = (header, expires - VAPID_RENEW_SECONDS)
        return header

    async def check(self) -> None:
        """Push services have no credentials check; what can be checked is that the key signs a VAPID token."""
        try:
            self._authorization("https://push.example")
        except Exception as exc:  # noqa: BLE001 - py_vapid raises plain exceptions for bad claims
            raise ChannelCheckFailed(f"the VAPID key or subject cannot sign a token: {exc}") from None
        finally:
            self._tokens.pop("https://push.example", None)

    # --- sending ----------------------------------------------------------------------------------------------

    async def send(self, batch: list[OutgoingMessage]) -> list[SendResult]:
        results: list[SendResult | None] = [None] * len(batch)
        jobs: list[tuple[int, dict[str, Any], bytes]] = []
        for i, message in enumerate(batch):
            problem, plaintext, subscriptions = self._prepare(message)
            if problem:
                results[i] = SendResult.failed(message.ref, problem, transient=False)
                continue
            jobs.extend((i, subscription, plaintext) for subscription in subscriptions)
        client = self._http()
        deliveries = await http_provider.gather_bounded(len(jobs), self.config.max_concurrency,
                                          lambda j: self._push(client, jobs[j][1], jobs[j][2]))
        per_message: dict[int, list[tuple[str, _Delivery]]] = {}
        for (i, subscription, _), delivery in zip(jobs, deliveries, strict=True):
            per_message.setdefault(i, []).append((subscription["endpoint"], delivery))
        for i, outcomes in per_message.items():
            results[i] = self._result(batch[i].ref, outcomes)
        return results  # type: ignore[return-value]  # every position is filled above

    def _prepare(self, message: OutgoingMessage) -> tuple[str | None, bytes, list[dict[str, Any]]]:
        payload = message.payload
        if not isinstance(payload, TextPayload):
            return "the webpush channel sends text payloads only", b"", []
        subscriptions = payload.fields.get("subscriptions") or []
        usable = [s for s in subscriptions if isinstance(s, dict) and isinstance(s.get("endpoint"), str)
                  and isinstance(s.get("keys"), dict)]
        if not usable:
            return "the contact has no push subscription", b"", []
        plaintext = notification(payload)
        if len(plaintext) > MAX_PAYLOAD:
            return (f"the notification is {len(plaintext)} bytes as JSON; push services take {MAX_PAYLOAD} at most "
                    "(shorten the template)"), b"", []
        return None, plaintext, usable

    async def _push(self, client: httpx.AsyncClient, subscription: dict[str, Any], plaintext: bytes) -> _Delivery:
        endpoint = subscription["endpoint"]
        host = urlsplit(endpoint).netloc
        try:
            body = WebPusher(subscription).encode(plaintext, "aes128gcm")["body"]
            headers = {**self._headers, "Authorization": self._authorization(_origin(endpoint))}
        except Exception as exc:  # noqa: BLE001 - pywebpush / http_ece raise assorted errors on bad keys
            return _Delivery("permanent", f"{host}: the subscription's keys cannot encrypt a message ({exc})")
        try:
            response = await client.post(endpoint, content=body, headers=headers)
        except httpx.HTTPError as exc:
            return _Delivery("transient", http_provider.transport_error(exc, f"the push service at {host}"))
        status = response.status_code
        if 200 <= status < 300:
            return _Delivery("ok", location=response.headers.get("location"))
        detail = f"{host}: {status} {response.text[:200].strip() or response.reason_phrase}"
        if status in (404, 410):
            return _Delivery("gone", detail)
        if http_provider.transient_status(status):
            return _Delivery("transient", detail, retry_after=http_provider.retry_after(response))
        return _Delivery("permanent", detail)

    @staticmethod
    def _result(ref: str, outcomes: list[tuple[str, _Delivery]]) -> SendResult:
        gone = tuple(endpoint for endpoint, d in outcomes if d.kind == "gone")
        delivered = [(endpoint, d) for endpoint, d in outcomes if d.kind == "ok"]
        if delivered:
            return SendResult(ref=ref, ok=True, provider_message_id=_message_id(delivered[0][1].location),
                              delivered_addresses=tuple(endpoint for endpoint, _ in delivered),
                              expired_addresses=gone)
        errors = "; ".join(d.detail for _, d in outcomes)
        transient = [d for _, d in outcomes if d.kind == "transient"]
        if transient:
            waits = [d.retry_after for d in transient if d.retry_after is not None]
            return SendResult(ref=ref, ok=False, transient=True, error=errors,
                              retry_after=max(waits) if waits else None, expired_addresses=gone)
        if len(gone) == len(outcomes):
            return SendResult(ref=ref, ok=False, error=f"every push subscription of the contact is gone: {errors}",
                              opted_out=True, expired_addresses=gone)
        return SendResult(ref=ref, ok=False, error=errors, expired_addresses=gone)
