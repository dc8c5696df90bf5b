"""DKIM signing with dkimpy (RFC 6376), rsa-sha256 with relaxed/relaxed canonicalisation."""

from __future__ import annotations

import re
from dataclasses import dataclass

import dkim
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

# Always signed when present. dkimpy's default list leaves out List-Unsubscribe-Post, and RFC 8058 §4
# requires both List-Unsubscribe headers to be covered by the signature for one-click to be honoured.
SIGNED_HEADERS = (
    "From", "To", "Subject", "Date", "Message-ID", "MIME-Version", "Content-Type",
    "List-Unsubscribe", "List-Unsubscribe-Post",
)
# Signed only when the message has them: signing an absent header would forbid adding it later, which is
# right for these but would make h= list headers the message never had.
OPTIONAL_SIGNED_HEADERS = ("Reply-To", "Cc", "In-Reply-To", "References", "List-Id", "Feedback-ID")

_LABEL = re.compile(r"^[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?$")


@dataclass(frozen=True, slots=True)
class DkimKey:
    domain: str
    selector: str
    private_key: bytes  # PEM

    def __post_init__(self) -> None:
        for what, value in (("domain", self.domain), ("selector", self.selector)):
            if not value or not all(_LABEL.match(label) for label in value.split(".")):
                raise ValueError(f"DKIM {what} {value!r} is not a DNS name")


def normalise_private_key(pem: str | bytes) -> bytes:
    """An RSA private key in any PEM form → the PKCS#1 PEM dkimpy reads. Raises ValueError otherwise."""
    data = pem.encode() if isinstance(pem, str) else pem
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError) as exc:
        raise ValueError("not an unencrypted PEM private key") from exc
    if not isinstance(key, rsa.RSAPrivateKey):
        # ValueError, as the docstring promises: the config validator turns only ValueError into a field error.
        raise ValueError("DKIM needs an RSA private key")  # noqa: TRY004
    if key.key_size < 1024:
        raise ValueError("an RSA key under 1024 bits is rejected by receivers")
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL,
                             serialization.NoEncryption())


def _header_names(raw: bytes) -> set[str]:
    head = raw.split(b"\r\n\r\n", 1)[0].split(b"\n\n", 1)[0]
    names = set()
    for line in head.splitlines():
        if line and line[:1] not in (b" ", b"\t") and b":" in line:
            names.add(line.split(b":", 1)[0].strip().decode("ascii", "replace").lower())
    return names


def is_signed_by(raw: bytes, key: DkimKey) -> bool:
    """True when the message already carries a signature for this domain and selector."""
    head = raw.split(b"\r\n\r\n", 1)[0]
    unfolded = re.sub(rb"\r?\n[ \t]+", b" ", head)
    for line in unfolded.splitlines():
        if line.lower().startswith(b"dkim-signature:"):
            tags = {t.split(b"=", 1)[0].strip(): t.split(b"=", 1)[1].strip()
                    for t in line.split(b":", 1)[1].split(b";") if b"=" in t}
            if tags.get(b"d", b"").lower() == key.domain.lower().encode() and \
                    tags.get(b"s", b"") == key.selector.encode():
                return True
    return False


def sign_message(raw: bytes, key: DkimKey) -> bytes:
    """The message with a DKIM-Signature header prepended."""
    present = _header_names(raw)
    headers = [*SIGNED_HEADERS, *(h for h in OPTIONAL_SIGNED_HEADERS if h.lower() in present)]
    signature = dkim.sign(
        raw,
        key.selector.encode(),
        key.domain.encode(),
        key.private_key,
        canonicalize=(b"relaxed", b"relaxed"),
        include_headers=[h.lower().encode() for h in headers],
        linesep=b"\r\n",
    )
    return signature + raw
