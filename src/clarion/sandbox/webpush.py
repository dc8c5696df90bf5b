"""A Web Push service sandbox (RFC 8030) that also plays the browser: it hands out subscriptions the way
pushManager.subscribe() does (a fresh P-256 key pair and auth secret per subscription, an endpoint under this
service), checks each push the way a push service does, and decrypts it the way the browser would.

    POST /push/{id}     a push message: TTL, Content-Encoding: aes128gcm, Urgency?, Authorization: vapid t=…,k=…
                        → 201 Created with Location (the message resource)

Checks, with autopush's error shape {"code", "errno", "error", "message", "more_info"}: an unknown subscription is
404, an unsubscribed one 410 Gone; no TTL header 400; no VAPID authorization 401; a VAPID token whose signature
does not verify against k, whose aud is not this service's origin, whose exp is past or over 24 hours away, or
without a sub, 403 — as is a k other than the applicationServerKey a restricted subscription was made with
(RFC 8292 §4); a body over 4,096 bytes 413; a body that is not aes128gcm or does not decrypt with the
subscription's keys 400 (a real service would take it and the browser drop it; the sandbox says so instead).
fail_next("transient") answers 429 with Retry-After, "permanent" 400, "opt_out" 410 Gone.

Push has no delivery receipts Clarion uses, so no callbacks are posted.
"""

from __future__ import annotations

import json
import re
import secrets
import time
from dataclasses import dataclass, field
from typing import Any

import http_ece
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from py_vapid import jwt
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from clarion.delivery.channels.webpush.keys import b64url
from clarion.sandbox.control import SandboxControl

MAX_BODY = 4096
MAX_TOKEN_LIFETIME = 24 * 3600
RETRY_AFTER_SECONDS = 7
URGENCIES = ("very-low", "low", "normal", "high")
MORE_INFO = "http://autopush.readthedocs.io/en/latest/http.html#error-codes"
_SUBJECT = re.compile(r"^(mailto:[^@\s]+@[^@\s]+|https://\S+)$")


@dataclass
class BrowserSubscription:
    """A PushSubscription as a browser holds it: the part it shares (endpoint, keys) and its private key."""

    id: str
    endpoint: str
    private_key: ec.EllipticCurvePrivateKey
    auth_secret: bytes
    application_server_key: str | None = None
    active: bool = True

    @property
    def p256dh(self) -> str:
        return b64url(self.private_key.public_key().public_bytes(serialization.Encoding.X962,
                                                               serialization.PublicFormat.UncompressedPoint))

    @property
    def auth(self) -> str:
        return b64url(self.auth_secret)

    def to_json(self) -> dict[str, Any]:
        """PushSubscription.toJSON(): what a site's script posts to its server."""
        return {"endpoint": self.endpoint, "expirationTime": None, "keys": {"p256dh": self.p256dh, "auth": self.auth}}


@dataclass(frozen=True)
class ReceivedPush:
    """A push message the sandbox accepted, decrypted as the subscribed browser would see it."""

    subscription_id: str
    message_id: str
    payload: bytes
    ttl: int
    urgency: str | None
    topic: str | None
    claims: dict[str, Any] = field(default_factory=dict)

    def json(self) -> Any:
        return json.loads(self.payload)


class PushService:
    """The sandbox's state: its subscriptions and what it received for them."""

    def __init__(self) -> None:
        self.subscriptions: dict[str, BrowserSubscription] = {}
        self.received: list[ReceivedPush] = []

    def subscribe(self, base_url: str, *, application_server_key: str | None = None) -> BrowserSubscription:
        """A new subscription of a browser at this service (served at `base_url`)."""
        sid = secrets.token_urlsafe(24)
        subscription = BrowserSubscription(
            id=sid, endpoint=f"{base_url.rstrip('/')}/push/{sid}", private_key=ec.generate_private_key(ec.SECP256R1()),
            auth_secret=secrets.token_bytes(16), application_server_key=application_server_key)
        self.subscriptions[sid] = subscription
        return subscription

    def unsubscribe(self, endpoint: str) -> None:
        """The person revoked permission (or the browser dropped the subscription): pushes now meet 410 Gone."""
        self.subscriptions[endpoint.rstrip("/").rsplit("/", 1)[-1]].active = False

    def received_by(self, subscription: BrowserSubscription) -> list[ReceivedPush]:
        return [r for r in self.received if r.subscription_id == subscription.id]


def _error(status: int, errno: int, error: str, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"code": status, "errno": errno, "error": error, "message": message, "more_info": MORE_INFO},
                        status_code=status, headers=headers)


def _vapid(authorization: str) -> tuple[str, str] | None:
    """(t, k) of an RFC 8292 `vapid t=…, k=…` Authorization header, or None."""
    scheme, _, rest = authorization.strip().partition(" ")
    if scheme.lower() != "vapid":
        return None
    parts = dict(p.strip().split("=", 1) for p in rest.split(",") if "=" in p)
    if not parts.get("t") or not parts.get("k"):
        return None
    return parts["t"], parts["k"]


class _WebPushSandbox:
    def __init__(self, control: SandboxControl, service: PushService) -> None:
        self.control = control
        self.service = service

    async def push(self, request: Request) -> Response:
        body = await request.body()
        self.control.record(request, body)
        await self.control.pause()
        subscription = self.service.subscriptions.get(request.path_params["sid"])
        if subscription is None:
            return _error(404, 102, "Not Found", "Request did not validate invalid token")
        if not subscription.active:
            return _error(410, 103, "Gone", "Request did not validate: subscription is no longer valid")
        failure = self.control.next_failure()
        if failure == "transient":
            return _error(429, 999, "Too Many Requests", "Rate limit exceeded",
                          headers={"Retry-After": str(RETRY_AFTER_SECONDS)})
        if failure == "permanent":
            return _error(400, 110, "Bad Request", "Invalid crypto headers")
        if failure == "opt_out":
            subscription.active = False
            return _error(410, 103, "Gone", "Request did not validate: subscription is no longer valid")

        ttl_header = request.headers.get("ttl")
        if ttl_header is None:
            return _error(400, 111, "Bad Request", "Missing TTL header")
        if not ttl_header.isdigit():
            return _error(400, 112, "Bad Request", "Invalid TTL header")
        urgency = request.headers.get("urgency")
        if urgency is not None and urgency not in URGENCIES:
            return _error(400, 112, "Bad Request", f"Invalid Urgency header (one of {', '.join(URGENCIES)})")
        claims, problem = self._check_vapid(request, subscription)
        if problem is not None:
            return problem
        if len(body) > MAX_BODY:
            return _error(413, 104, "Payload Too Large", f"Data payload must be {MAX_BODY} bytes or less")
        if body and request.headers.get("content-encoding", "").lower() != "aes128gcm":
            return _error(400, 110, "Bad Request", "Content-Encoding must be aes128gcm (RFC 8291)")
        try:
            payload = http_ece.decrypt(body, private_key=subscription.private_key,
                                       auth_secret=subscription.auth_secret, version="aes128gcm") if body else b""
        except Exception as exc:  # noqa: BLE001 - http_ece raises ECEException, ValueError, InvalidTag…
            return _error(400, 110, "Bad Request", f"the payload does not decrypt with the subscription's keys "
                          f"({type(exc).__name__}); a browser would drop it")
        message_id = secrets.token_urlsafe(16)
        self.service.received.append(ReceivedPush(
            subscription_id=subscription.id, message_id=message_id, payload=payload, ttl=int(ttl_header),
            urgency=urgency, topic=request.headers.get("topic"), claims=claims))
        origin = f"{request.url.scheme}://{request.url.netloc}"
        return Response(status_code=201, headers={"Location": f"{origin}/m/{message_id}", "TTL": ttl_header})

    def _check_vapid(self, request: Request,
                     subscription: BrowserSubscription) -> tuple[dict[str, Any], JSONResponse | None]:
        authorization = request.headers.get("authorization")
        if not authorization:
            return {}, _error(401, 109, "Unauthorized", "Request did not validate missing authorization header")
        parsed = _vapid(authorization)
        if parsed is None:
            return {}, _error(401, 109, "Unauthorized", "Request did not validate: not a 'vapid t=…, k=…' header")
        token, key = parsed
        try:
            claims = jwt.decode(token, key)
        except (InvalidSignature, ValueError, KeyError):
            return {}, _error(403, 109, "Forbidden", "Request did not validate: the VAPID signature does not "
                              "verify with k")
        origin = f"{request.url.scheme}://{request.url.netloc}"
        now = time.time()
        exp = claims.get("exp")
        if claims.get("aud") != origin:
            return claims, _error(403, 109, "Forbidden", f"VAPID aud must be {origin}, got {claims.get('aud')!r}")
        if not isinstance(exp, int) or exp <= now or exp > now + MAX_TOKEN_LIFETIME:
            return claims, _error(403, 109, "Forbidden", "VAPID exp must be in the next 24 hours")
        if not isinstance(claims.get("sub"), str) or not _SUBJECT.match(claims["sub"]):
            return claims, _error(403, 109, "Forbidden", "VAPID sub must be a mailto: or https: URI")
        restricted = subscription.application_server_key
        if restricted is not None and restricted.rstrip("=") != key.rstrip("="):
            return claims, _error(403, 109, "Forbidden", "VAPID k is not the key this subscription was made with")
        return claims, None


def create_app(control: SandboxControl, service: PushService | None = None) -> Starlette:
    sandbox = _WebPushSandbox(control, service or PushService())
    app = Starlette(routes=[Route("/push/{sid}", sandbox.push, methods=["POST"])])
    app.state.sandbox = sandbox
    app.state.push = sandbox.service
    return app

