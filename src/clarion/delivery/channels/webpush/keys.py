"""VAPID keys (RFC 8292): loading the forms people paste, deriving the public key browsers subscribe with, and
making a fresh pair (`clarion vapid-keys`)."""

from __future__ import annotations

import base64

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from py_vapid import Vapid


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def load_private_key(text: str) -> Vapid:
    """A VAPID signer from a P-256 private key as PEM (SEC1 or PKCS#8), as the raw 32-byte scalar in base64url
    (what `web-push generate-vapid-keys` prints) or as base64url DER. ValueError when it is none of these."""
    text = text.strip()
    try:
        vapid = Vapid.from_pem(text.encode()) if text.startswith("-----BEGIN") else Vapid.from_string(text)
    except Exception as exc:  # py_vapid raises whatever its parsers raise
        raise ValueError("not a P-256 private key (PEM, or base64url raw or DER)") from exc
    if not isinstance(vapid.private_key, ec.EllipticCurvePrivateKey) or \
            not isinstance(vapid.private_key.curve, ec.SECP256R1):
        # ValueError, not TypeError: config validation reports ValueErrors as field errors.
        raise ValueError("VAPID needs a P-256 (prime256v1) key")  # noqa: TRY004
    return vapid


def public_key_of(vapid: Vapid) -> str:
    """The applicationServerKey browsers pass to pushManager.subscribe(): the public point, base64url."""
    return b64url(vapid.public_key.public_bytes(serialization.Encoding.X962,
                                                serialization.PublicFormat.UncompressedPoint))


def generate_vapid_keys() -> dict[str, str]:
    """A fresh key pair in the form the webpush channel config takes."""
    key = ec.generate_private_key(ec.SECP256R1())
    scalar = key.private_numbers().private_value.to_bytes(32, "big")
    vapid = Vapid(key)
    return {"vapid_private_key": b64url(scalar), "vapid_public_key": public_key_of(vapid)}
