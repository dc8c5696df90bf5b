"""Web Push subscriptions of contacts: what a site's server posts after pushManager.subscribe() in a browser."""

from __future__ import annotations

import base64
import binascii
import ipaddress
import uuid
from datetime import datetime
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from cryptography.hazmat.primitives.asymmetric import ec
from pydantic import BaseModel, ConfigDict, Field, field_validator

if TYPE_CHECKING:
    from clarion.models import PushSubscription

P256DH_BYTES = 65  # an uncompressed P-256 point: 0x04 || X || Y
AUTH_BYTES = 16
_LOOPBACK_HOSTS = {"localhost", "127.0.0.1", "::1"}
_BASE64URL = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")


def _base64url(text: str) -> bytes:
    stripped = text.strip().rstrip("=")
    if not stripped or not set(stripped) <= _BASE64URL:
        raise ValueError("must be base64url (A-Z a-z 0-9 - _)")
    try:
        return base64.urlsafe_b64decode(stripped + "=" * (-len(stripped) % 4))
    except (binascii.Error, ValueError):
        raise ValueError("must be base64url") from None


def check_endpoint(url: str) -> str:
    """A push service URL: https; plain http only on this machine (a local sandbox). Private network addresses
    are refused: the server would post to them on a tenant's say-so."""
    parts = urlsplit(url)
    host = (parts.hostname or "").lower()
    if not host or parts.scheme not in ("https", "http"):
        raise ValueError("must be an https URL")
    if parts.scheme == "http" and host not in _LOOPBACK_HOSTS:
        raise ValueError("must be an https URL (plain http only for localhost)")
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return url
    if not address.is_loopback and (address.is_private or address.is_link_local or address.is_reserved
                                    or address.is_multicast or address.is_unspecified):
        raise ValueError("must not point at a private network address")
    return url


class PushKeys(BaseModel):
    model_config = ConfigDict(extra="forbid")

    p256dh: str = Field(max_length=200, description="The browser's P-256 public key, base64url (65 bytes)")
    auth: str = Field(max_length=100, description="The 16-byte auth secret, base64url")

    @field_validator("p256dh")
    @classmethod
    def _point(cls, value: str) -> str:
        raw = _base64url(value)
        if len(raw) != P256DH_BYTES or raw[0] != 4:
            raise ValueError(f"must decode to a {P256DH_BYTES}-byte uncompressed P-256 point")
        try:
            ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), raw)
        except ValueError:
            raise ValueError("is not a point on the P-256 curve") from None
        return value.strip().rstrip("=")

    @field_validator("auth")
    @classmethod
    def _secret(cls, value: str) -> str:
        if len(_base64url(value)) != AUTH_BYTES:
            raise ValueError(f"must decode to {AUTH_BYTES} bytes")
        return value.strip().rstrip("=")


class PushSubscriptionCreate(BaseModel):
    """PushSubscription.toJSON()'s endpoint and keys, for a contact. The same endpoint again updates it."""

    model_config = ConfigDict(extra="forbid")

    contact_id: uuid.UUID
    endpoint: str = Field(max_length=2048)
    keys: PushKeys
    user_agent: str | None = Field(default=None, max_length=500)

    @field_validator("endpoint")
    @classmethod
    def _endpoint(cls, value: str) -> str:
        return check_endpoint(value.strip())


class PushSubscriptionRead(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: uuid.UUID
    contact_id: uuid.UUID
    endpoint: str
    keys: PushKeys
    user_agent: str | None
    created_at: datetime
    updated_at: datetime
    last_success_at: datetime | None

    @classmethod
    def of(cls, row: PushSubscription) -> PushSubscriptionRead:
        return cls(id=row.id, contact_id=row.contact_id, endpoint=row.endpoint,
                   keys=PushKeys.model_construct(p256dh=row.p256dh, auth=row.auth), user_agent=row.user_agent,
                   created_at=row.created_at, updated_at=row.updated_at, last_success_at=row.last_success_at)


class PushSubscriptionPage(BaseModel):
    items: list[PushSubscriptionRead]
    next_cursor: str | None = None
