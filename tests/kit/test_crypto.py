"""Secrets at rest: AES-GCM under an HKDF-derived key, versioned, purpose-bound."""

from __future__ import annotations

import pytest
from pydantic import BaseModel, SecretStr

from clarion.delivery.channels.smtp import DkimConfig, SmtpConfig
from clarion.kit.crypto import (
    DecryptionError,
    SecretBox,
    decrypt_config,
    derive_key,
    encrypt_config,
    mask,
    mask_config,
)

SECRET = "install-secret-" + "s" * 40


def test_a_round_trip_and_a_fresh_nonce_each_time() -> None:
    box = SecretBox(SECRET)
    one, two = box.encrypt("hunter2"), box.encrypt("hunter2")
    assert one.startswith("v1:") and two.startswith("v1:")
    assert one != two
    assert "hunter2" not in one
    assert box.decrypt(one) == box.decrypt(two) == "hunter2"
    assert box.decrypt(box.encrypt("")) == ""
    assert box.decrypt(box.encrypt("pässwörd ✓")) == "pässwörd ✓"


def test_keys_differ_by_purpose_and_secret() -> None:
    assert derive_key(SECRET, "a") != derive_key(SECRET, "b")
    assert derive_key(SECRET, "a") != derive_key(SECRET + "x", "a")
    assert derive_key(SECRET, "a") == derive_key(SECRET.encode(), "a")
    assert len(derive_key(SECRET, "a", 64)) == 64
    with pytest.raises(ValueError):
        derive_key("", "a")


@pytest.mark.parametrize("mangle", [
    lambda t: t[:-2] + ("A" if t[-2] != "A" else "B") + t[-1],  # a flipped ciphertext character
    lambda t: t[:20],  # truncated
    lambda t: "v2:" + t[3:],  # a version this code does not know
    lambda t: t[3:],  # no version at all
    lambda t: "v1:" + "!!" + t[5:],  # not base64url
])
def test_tampered_ciphertext_is_refused(mangle) -> None:  # type: ignore[no-untyped-def]
    box = SecretBox(SECRET)
    token = box.encrypt("hunter2-secret")
    with pytest.raises(DecryptionError):
        box.decrypt(mangle(token))


def test_another_install_or_purpose_cannot_decrypt() -> None:
    token = SecretBox(SECRET).encrypt("hunter2")
    with pytest.raises(DecryptionError):
        SecretBox("another-install-secret-" + "t" * 30).decrypt(token)
    with pytest.raises(DecryptionError):
        SecretBox(SECRET, purpose="webhook-secrets").decrypt(token)


def test_mask_shows_at_most_the_last_four() -> None:
    assert mask("sk_live_abcdefgh1234") == "••••1234"
    assert mask("short") == "••••"  # too short to reveal any of it
    assert mask("") == "••••"


class Nested(BaseModel):
    token: SecretStr | None = None
    plain: int = 3


class Config(BaseModel):
    host: str
    password: SecretStr
    optional: SecretStr | None = None
    nested: Nested | None = None


def test_config_secret_fields_are_encrypted_for_storage_and_restored() -> None:
    box = SecretBox(SECRET)
    config = Config(host="mail.example.com", password="hunter2-password",
                    nested=Nested(token="tok-abcdefgh9876", plain=7))
    stored = encrypt_config(config, box)

    assert stored["host"] == "mail.example.com"
    assert stored["optional"] is None
    assert stored["password"].startswith("v1:") and "hunter2" not in str(stored)
    assert stored["nested"]["token"].startswith("v1:") and stored["nested"]["plain"] == 7

    back = decrypt_config(Config, stored, box)
    assert back.password.get_secret_value() == "hunter2-password"
    assert back.nested is not None and back.nested.token is not None
    assert back.nested.token.get_secret_value() == "tok-abcdefgh9876"
    assert back.host == "mail.example.com"

    stored["password"] = SecretBox("other-secret-" + "u" * 30).encrypt("x")
    with pytest.raises(DecryptionError):
        decrypt_config(Config, stored, box)


def test_config_masking_for_display() -> None:
    config = Config(host="h", password="hunter2-password", nested=Nested(token="tok-abcdefgh9876"))
    masked = mask_config(config)
    assert masked == {"host": "h", "password": "••••word", "optional": None,
                      "nested": {"token": "••••9876", "plain": 3}}


def test_the_smtp_config_round_trips_including_its_dkim_key() -> None:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    pem = rsa.generate_private_key(public_exponent=65537, key_size=1024).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()).decode()
    config = SmtpConfig(host="smtp.example.com", username="u", password="p" * 16,
                        dkim=DkimConfig(domain="shop.example", selector="s1", private_key=pem))
    box = SecretBox(SECRET)
    stored = encrypt_config(config, box)
    assert "PRIVATE KEY" not in str(stored) and "pppp" not in str(stored)
    assert decrypt_config(SmtpConfig, stored, box) == config
