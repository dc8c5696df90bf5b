"""Signed, URL-safe tokens for public links (open pixels, clicks, unsubscribes, Telegram start links).

A token is `item.item….mac`: each payload item tagged and encoded (`n`/`m` base36 int, `u` base64url UUID,
`s` base64url UTF-8 string), then a 128-bit truncated HMAC-SHA256. The MAC key is derived from the install
secret per purpose, and the purpose is also inside the MAC, so an "open" token never verifies as "unsub".
Tokens do not expire: an unsubscribe link must keep working in a years-old message.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import uuid
from functools import lru_cache

from clarion.config import get_settings
from clarion.kit.crypto import derive_key

Item = int | str | uuid.UUID
_PURPOSE = re.compile(r"^[a-z][a-z0-9_-]{0,31}$")
_BASE64URL = re.compile(r"[A-Za-z0-9_-]*")
_BASE36 = re.compile(r"[0-9a-z]+")
_MAC_BYTES = 16
_MAC_TEXT = 22  # characters of the unpadded base64url of _MAC_BYTES
MAX_TOKEN_LENGTH = 2048  # verify() will not spend work on anything longer than a real token


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def _unb64(text: str) -> bytes:
    if not _BASE64URL.fullmatch(text):
        raise ValueError("not base64url")
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _base36(value: int) -> str:
    digits = "0123456789abcdefghijklmnopqrstuvwxyz"
    out = ""
    while True:
        value, rest = divmod(value, 36)
        out = digits[rest] + out
        if value == 0:
            return out


@lru_cache(maxsize=4096)
def _encode_int(item: int) -> str:
    # Cached: a message's tokens (open, clicks, unsubscribe) all name its recipient.
    return ("n" if item >= 0 else "m") + _base36(abs(item))


def _encode(item: Item) -> str:
    if type(item) is int:
        return _encode_int(item)
    if isinstance(item, bool):  # bool is an int; True would come back as 1
        raise TypeError("token payload items are int, str or UUID, not bool")
    if isinstance(item, int):
        return _encode_int(int(item))
    if isinstance(item, uuid.UUID):
        return "u" + _b64(item.bytes)
    if isinstance(item, str):
        return "s" + _b64(item.encode())
    raise TypeError(f"token payload items are int, str or UUID, not {type(item).__name__}")


def _decode(part: str) -> Item:
    tag = part[:1]
    if tag in ("n", "m"):
        if not _BASE36.fullmatch(part, 1):
            raise ValueError("bad integer")
        value = int(part[1:], 36)
        return value if tag == "n" else -value
    body = part[1:]
    if tag == "u":
        return uuid.UUID(bytes=_unb64(body))
    if tag == "s":
        return _unb64(body).decode()
    raise ValueError("unknown item tag")


class Signer:
    def __init__(self, secret: str | bytes) -> None:
        self._secret = secret
        self._keys: dict[str, bytes] = {}
        # Per purpose, the HMAC state after its key and the "purpose\0" prefix: each token then costs one copy and
        # the hashing of its own body (verify runs on every open and click).
        self._primed: dict[str, hmac.HMAC] = {}

    def _key(self, purpose: str) -> bytes:
        key = self._keys.get(purpose)
        if key is None:
            if not _PURPOSE.match(purpose):
                raise ValueError(f"token purpose {purpose!r} must match {_PURPOSE.pattern}")
            key = self._keys[purpose] = derive_key(self._secret, f"signing/{purpose}")
        return key

    def _mac(self, purpose: str, body: str) -> str:
        return self._mac_ascii(purpose, body).decode()

    def _mac_ascii(self, purpose: str, body: str) -> bytes:
        """The MAC of `body` for `purpose` (the first 16 bytes of HMAC-SHA256 over the purpose, a NUL byte and the
        body) as unpadded base64url text, in bytes."""
        primed = self._primed.get(purpose)
        if primed is None:
            primed = self._primed[purpose] = hmac.new(self._key(purpose), f"{purpose}\x00".encode(), hashlib.sha256)
        mac = primed.copy()
        mac.update(body.encode())
        return base64.urlsafe_b64encode(mac.digest()[:_MAC_BYTES])[:_MAC_TEXT]

    def sign(self, purpose: str, payload: tuple[Item, ...]) -> str:
        if not payload:
            raise ValueError("a token needs at least one payload item")
        body = _encode(payload[0]) if len(payload) == 1 else ".".join([_encode(item) for item in payload])
        return f"{body}.{self._mac(purpose, body)}"

    def verify(self, purpose: str, token: str) -> tuple[Item, ...] | None:
        """The payload if `token` was signed for `purpose` with this secret, else None."""
        if not token or len(token) > MAX_TOKEN_LENGTH:
            return None
        body, sep, mac = token.rpartition(".")
        if not sep or not body:
            return None
        if not hmac.compare_digest(mac.encode(), self._mac_ascii(purpose, body)):
            return None
        try:
            return tuple([_decode(part) for part in body.split(".")])
        except (ValueError, UnicodeDecodeError):
            # A valid MAC over an undecodable body cannot come from sign(); treat it like any forgery.
            return None

    # --- compact tokens --------------------------------------------------------------------------------------
    # Some carriers allow no '.' and few characters: a Telegram /start payload is at most 64 of [A-Za-z0-9_-].
    # A compact token is base64url(uuid bytes + 96-bit MAC), 38 characters; the MAC also covers `bound_to`
    # (a tenant id), which is not in the token, so the verifier must know it and a token of one tenant never
    # verifies for another.

    def _compact_mac(self, purpose: str, value: uuid.UUID, bound_to: uuid.UUID | None) -> bytes:
        message = b"%s\x00%s%s" % (purpose.encode(), value.bytes, bound_to.bytes if bound_to else b"")
        return hmac.new(self._key(purpose), message, hashlib.sha256).digest()[:_COMPACT_MAC_BYTES]

    def sign_compact(self, purpose: str, value: uuid.UUID, *, bound_to: uuid.UUID | None = None) -> str:
        return _b64(value.bytes + self._compact_mac(purpose, value, bound_to))

    def verify_compact(self, purpose: str, token: str, *, bound_to: uuid.UUID | None = None) -> uuid.UUID | None:
        """The UUID a compact token of `purpose` (bound to `bound_to`) carries, else None."""
        if not token or len(token) != COMPACT_TOKEN_LENGTH:
            return None
        try:
            raw = _unb64(token)
        except ValueError:
            return None
        # The last character carries spare bits: only the canonical spelling is the token (one token, one string).
        if len(raw) != 16 + _COMPACT_MAC_BYTES or _b64(raw) != token:
            return None
        value = uuid.UUID(bytes=raw[:16])
        if not hmac.compare_digest(raw[16:], self._compact_mac(purpose, value, bound_to)):
            return None
        return value


_COMPACT_MAC_BYTES = 12
COMPACT_TOKEN_LENGTH = 38  # base64url of 28 bytes, unpadded


@lru_cache(maxsize=8)
def signer_for(secret: str) -> Signer:
    """One Signer per install secret, so per-purpose keys are derived once per process."""
    return Signer(secret)


def default_secret() -> str:
    """The install secret from the settings (CLARION_SECRET_KEY, else the data dir's)."""
    return get_settings().resolved_secret_key()


def sign(purpose: str, payload: tuple[Item, ...], *, secret: str | None = None) -> str:
    """Sign with the install secret (or `secret`, e.g. `request.app.state.secret_key`)."""
    return signer_for(secret or default_secret()).sign(purpose, payload)


def verify(purpose: str, token: str, *, secret: str | None = None) -> tuple[Item, ...] | None:
    return signer_for(secret or default_secret()).verify(purpose, token)
