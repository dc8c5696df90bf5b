"""Secrets at rest: channel passwords, API tokens and keys are stored encrypted with a key derived from the
install's secret (CLARION_SECRET_KEY), never in the clear.

Ciphertext is `v1:` + base64url(nonce ‖ AES-256-GCM(plaintext)). The version prefix names the scheme and
key generation, so a later key rotation can decrypt v1 while writing v2.
"""

from __future__ import annotations

import base64
import os
import types
import typing
from typing import Any, TypeVar

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from pydantic import BaseModel, SecretStr

VERSION = "v1"
_NONCE_BYTES = 12
# A fixed, public salt: the input is already a high-entropy secret, the salt only separates Clarion's use.
_SALT = b"clarion/hkdf/v1"
MASK = "••••"

M = TypeVar("M", bound=BaseModel)


class DecryptionError(ValueError):
    """Not a ciphertext this key wrote: tampered, truncated, another install's, or another purpose's."""


def derive_key(secret: str | bytes, purpose: str, length: int = 32) -> bytes:
    """A key for one purpose; keys of different purposes are independent (HKDF-SHA256, RFC 5869)."""
    if not purpose:
        raise ValueError("a key purpose is required")
    material = secret.encode() if isinstance(secret, str) else secret
    if not material:
        raise ValueError("the install secret is empty")
    return HKDF(algorithm=hashes.SHA256(), length=length, salt=_SALT, info=purpose.encode()).derive(material)


class SecretBox:
    """Encrypts short strings for storage. The purpose is bound into the key and the AEAD data, so a value
    encrypted for one purpose does not decrypt under another."""

    def __init__(self, secret: str | bytes, purpose: str = "channel-secrets") -> None:
        self.purpose = purpose
        self._aead = AESGCM(derive_key(secret, f"crypto/{VERSION}/{purpose}"))

    def encrypt(self, plaintext: str) -> str:
        nonce = os.urandom(_NONCE_BYTES)
        sealed = self._aead.encrypt(nonce, plaintext.encode(), self.purpose.encode())
        return f"{VERSION}:" + base64.urlsafe_b64encode(nonce + sealed).decode().rstrip("=")

    def decrypt(self, token: str) -> str:
        version, sep, body = token.partition(":")
        if not sep or version != VERSION:
            raise DecryptionError(f"unknown ciphertext version {version!r}" if sep else "not a ciphertext")
        try:
            blob = base64.urlsafe_b64decode(body + "=" * (-len(body) % 4))
        except ValueError as exc:
            raise DecryptionError("ciphertext is not base64url") from exc
        if len(blob) <= _NONCE_BYTES:
            raise DecryptionError("ciphertext is truncated")
        try:
            plain = self._aead.decrypt(blob[:_NONCE_BYTES], blob[_NONCE_BYTES:], self.purpose.encode())
        except InvalidTag as exc:
            raise DecryptionError("ciphertext does not verify under this key") from exc
        return plain.decode()


def mask(secret: str) -> str:
    """`••••1234` for display: the last four characters only when the secret is long enough that they give
    little away."""
    return MASK + secret[-4:] if len(secret) >= 12 else MASK


def _annotation_parts(annotation: Any) -> tuple[Any, ...]:
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        return tuple(a for part in typing.get_args(annotation) for a in _annotation_parts(part))
    return (annotation,)


def _is_secret(annotation: Any) -> bool:
    return SecretStr in _annotation_parts(annotation)


def _nested_model(annotation: Any) -> type[BaseModel] | None:
    for part in _annotation_parts(annotation):
        if isinstance(part, type) and issubclass(part, BaseModel):
            return part
    return None


def _transform(model: BaseModel, on_secret: Any) -> dict[str, Any]:
    out: dict[str, Any] = {}
    plain = model.model_dump(mode="json")
    for name in type(model).model_fields:
        value = getattr(model, name)
        if isinstance(value, SecretStr):
            out[name] = on_secret(value.get_secret_value())
        elif isinstance(value, BaseModel):
            out[name] = _transform(value, on_secret)
        else:
            out[name] = plain[name]
    return out


def encrypt_config(config: BaseModel, box: SecretBox) -> dict[str, Any]:
    """A JSON-ready dict of `config` with every SecretStr field (nested models included) encrypted."""
    return _transform(config, box.encrypt)


def mask_config(config: BaseModel) -> dict[str, Any]:
    """A JSON-ready dict of `config` for display: every SecretStr field masked."""
    return _transform(config, mask)


def _decrypt_fields(schema: type[BaseModel], stored: dict[str, Any], box: SecretBox) -> dict[str, Any]:
    out = dict(stored)
    for name, field in schema.model_fields.items():
        value = stored.get(name)
        if value is None:
            continue
        if _is_secret(field.annotation) and isinstance(value, str):
            out[name] = box.decrypt(value)
        elif (nested := _nested_model(field.annotation)) is not None and isinstance(value, dict):
            out[name] = _decrypt_fields(nested, value, box)
    return out


def decrypt_config(schema: type[M], stored: dict[str, Any], box: SecretBox) -> M:
    """The config model back from what encrypt_config stored. Raises DecryptionError on a bad secret."""
    return schema.model_validate(_decrypt_fields(schema, stored, box))
