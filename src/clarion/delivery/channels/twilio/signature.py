"""X-Twilio-Signature: how Twilio signs each webhook call, and checking it.

Twilio takes the full URL it called (query string included), appends every POST parameter's name and value
sorted by name, HMAC-SHA1s that with the account's auth token and sends it base64-encoded. One implementation,
used by the provider to verify and by the sandbox to sign; tests pin it to Twilio's published example.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from collections.abc import Iterable
from urllib.parse import urlsplit, urlunsplit

_DEFAULT_PORTS = {"https": 443, "http": 80}


def twilio_signature(auth_token: str, url: str, params: Iterable[tuple[str, str]] = ()) -> str:
    """The signature Twilio sends for a call to `url` with these form parameters (none for a GET)."""
    data = url + "".join(name + value for name, value in sorted(params))
    digest = hmac.new(auth_token.encode(), data.encode(), hashlib.sha1).digest()
    return base64.b64encode(digest).decode()


def url_variants(url: str) -> list[str]:
    """`url`, and the same URL with its default port written out or left out. Twilio has signed both forms over
    the years (its own helper libraries accept either), and a proxy may add or drop the port on the way."""
    parts = urlsplit(url)
    default = _DEFAULT_PORTS.get(parts.scheme)
    if default is None or parts.hostname is None:
        return [url]
    host = parts.hostname if ":" not in parts.hostname else f"[{parts.hostname}]"
    userinfo = parts.netloc.rpartition("@")[0]
    prefix = f"{userinfo}@" if userinfo else ""
    if parts.port is None:
        other = urlunsplit(parts._replace(netloc=f"{prefix}{host}:{default}"))
    elif parts.port == default:
        other = urlunsplit(parts._replace(netloc=f"{prefix}{host}"))
    else:
        return [url]
    return [url, other]


def signature_matches(auth_token: str, url: str, params: list[tuple[str, str]], signature: str) -> bool:
    """Whether `signature` is Twilio's for this call, compared in constant time."""
    given = signature.encode()
    return any(hmac.compare_digest(twilio_signature(auth_token, candidate, params).encode(), given)
               for candidate in url_variants(url))
