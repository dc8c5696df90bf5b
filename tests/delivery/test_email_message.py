"""build_email: structure, unsubscribe headers (RFC 8058) and DKIM signatures that verify."""

from __future__ import annotations

import base64
import re
from email import message_from_bytes, policy
from typing import Any

import dkim
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from clarion.delivery.channels.base import EmailPayload, OutgoingMessage
from clarion.delivery.channels.smtp import DkimConfig, SmtpConfig, SmtpProvider
from clarion.delivery.email_message import DkimKey, build_email
from tests.delivery.smtp_server import RecordingHandler, smtp_server

UNSUB_URL = "https://clarion.example.com/t/u/" + "Tok3n-" * 30  # long enough to need folding
HTML = "<html><body><p>Grüße, Zoë! Our spring offer – 20% off.</p>" + "<p>more</p>" * 40 + "</body></html>"
TEXT = "Grüße, Zoë! Our spring offer – 20% off.\n\nUnsubscribe: " + UNSUB_URL


@pytest.fixture(scope="module")
def rsa_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def private_pem(key: rsa.RSAPrivateKey, fmt: serialization.PrivateFormat) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, fmt, serialization.NoEncryption())


def dns_for(key: rsa.RSAPrivateKey, selector: str = "mail", domain: str = "shop.example") -> Any:
    der = key.public_key().public_bytes(serialization.Encoding.DER,
                                        serialization.PublicFormat.SubjectPublicKeyInfo)
    record = b"v=DKIM1; k=rsa; p=" + base64.b64encode(der)
    wanted = f"{selector}._domainkey.{domain}.".encode()

    def dnsfunc(name: bytes, timeout: int = 5) -> bytes | None:
        return record if name == wanted else None

    return dnsfunc


def email(**overrides: Any) -> bytes:
    args: dict[str, Any] = dict(
        from_addr="Shop <news@shop.example>", to_addr="Zoë Müller <zoe@example.com>",
        subject="Frühling: 20% off",
        html=HTML, text=TEXT, reply_to="help@shop.example", list_unsubscribe_url=UNSUB_URL,
        list_unsubscribe_mailto="unsubscribe@shop.example?subject=unsubscribe",
        message_id_domain="shop.example",
    )
    args.update(overrides)
    return build_email(**args)


def signed_headers(raw: bytes) -> list[str]:
    head = raw.split(b"\r\n\r\n", 1)[0].decode()
    unfolded = re.sub(r"\r\n[ \t]+", " ", head)
    signature = next(line for line in unfolded.split("\r\n") if line.lower().startswith("dkim-signature:"))
    tags = dict(part.strip().split("=", 1) for part in signature.split(":", 1)[1].split(";") if "=" in part)
    return [h.strip().lower() for h in tags["h"].replace(" ", "").split(":")]


def test_the_message_parses_back_into_text_then_html() -> None:
    raw = email()
    msg = message_from_bytes(raw, policy=policy.default)
    assert msg.get_content_type() == "multipart/alternative"
    parts = list(msg.iter_parts())
    assert [p.get_content_type() for p in parts] == ["text/plain", "text/html"]
    # Canonical text line breaks are CRLF (RFC 2045); the stdlib hands them back as they were sent.
    assert parts[0].get_content().replace("\r\n", "\n") == TEXT + "\n"
    assert parts[1].get_content().replace("\r\n", "\n") == HTML + "\n"
    assert all(p.get_content_charset() == "utf-8" for p in parts)
    # 7-bit clean on the wire: no relay needs 8BITMIME.
    assert raw.isascii()
    assert {p["Content-Transfer-Encoding"] for p in parts} <= {"quoted-printable", "base64"}
    assert str(msg["Subject"]) == "Frühling: 20% off"
    assert str(msg["To"]) == "Zoë Müller <zoe@example.com>"
    assert str(msg["Reply-To"]) == "help@shop.example"
    assert msg["Date"] is not None and msg["MIME-Version"] == "1.0"
    assert all(len(line) <= 998 for line in raw.split(b"\r\n"))
    assert b"\n" not in raw.replace(b"\r\n", b"")  # CRLF throughout


def test_unsubscribe_headers_follow_rfc_8058() -> None:
    msg = message_from_bytes(email(), policy=policy.default)
    assert str(msg["List-Unsubscribe"]) == (
        f"<{UNSUB_URL}>, <mailto:unsubscribe@shop.example?subject=unsubscribe>")
    assert str(msg["List-Unsubscribe-Post"]) == "List-Unsubscribe=One-Click"


def test_without_a_mailto_the_header_has_the_url_alone_and_html_may_be_absent() -> None:
    msg = message_from_bytes(email(list_unsubscribe_mailto=None, html=None), policy=policy.default)
    assert str(msg["List-Unsubscribe"]) == f"<{UNSUB_URL}>"
    assert msg.get_content_type() == "text/plain"


def test_every_message_gets_its_own_message_id_at_the_given_domain() -> None:
    ids = {message_from_bytes(email(), policy=policy.default)["Message-ID"] for _ in range(50)}
    assert len(ids) == 50
    assert all(re.fullmatch(r"<[0-9a-f]{32}@shop\.example>", str(i)) for i in ids)


def test_custom_headers_are_added_but_cannot_replace_the_built_ones() -> None:
    msg = message_from_bytes(email(headers={"X-Campaign-ID": "c-42"}), policy=policy.default)
    assert msg["X-Campaign-ID"] == "c-42"
    with pytest.raises(ValueError, match="List-Unsubscribe"):
        email(headers={"List-Unsubscribe": "<https://elsewhere.example/>"})


@pytest.mark.parametrize("overrides", [
    {"subject": "Hi\r\nBcc: victim@example.com"},
    {"to_addr": "zoe@example.com\r\nBcc: victim@example.com"},
    {"headers": {"X-Tag": "a\nb"}},
    {"headers": {"Bad Name": "x"}},
    {"list_unsubscribe_url": "javascript:alert(1)"},
    {"list_unsubscribe_url": "https://x.example/u>, <https://evil.example/"},
    {"from_addr": "not an address"},
])
def test_header_injection_and_bad_values_are_refused(overrides: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        email(**overrides)


@pytest.mark.parametrize("fmt", [serialization.PrivateFormat.TraditionalOpenSSL,
                                 serialization.PrivateFormat.PKCS8])
def test_dkim_signature_verifies_and_covers_both_unsubscribe_headers(
        rsa_key: rsa.RSAPrivateKey, fmt: serialization.PrivateFormat) -> None:
    pem = DkimConfig(domain="shop.example", selector="mail", private_key=private_pem(rsa_key, fmt).decode())
    raw = email(dkim=pem.key())

    assert dkim.verify(raw, dnsfunc=dns_for(rsa_key))
    signed = signed_headers(raw)
    assert "list-unsubscribe" in signed and "list-unsubscribe-post" in signed
    assert {"from", "to", "subject", "date", "message-id", "mime-version", "content-type",
            "reply-to"} <= set(signed)
    # relaxed/relaxed, rsa-sha256
    assert b"c=relaxed/relaxed" in raw and b"a=rsa-sha256" in raw


def test_a_changed_unsubscribe_post_header_breaks_the_signature(rsa_key: rsa.RSAPrivateKey) -> None:
    key = DkimKey(domain="shop.example", selector="mail",
                  private_key=private_pem(rsa_key, serialization.PrivateFormat.TraditionalOpenSSL))
    raw = email(dkim=key)
    tampered = raw.replace(b"List-Unsubscribe-Post: List-Unsubscribe=One-Click",
                           b"List-Unsubscribe-Post: List-Unsubscribe=Two-Click")
    assert tampered != raw
    assert not dkim.verify(tampered, dnsfunc=dns_for(rsa_key))
    other_key = rsa.generate_private_key(public_exponent=65537, key_size=1024)
    assert not dkim.verify(raw, dnsfunc=dns_for(other_key))


def test_a_dkim_config_rejects_what_cannot_sign() -> None:
    with pytest.raises(ValueError):
        DkimConfig(domain="shop.example", selector="mail", private_key="-----BEGIN PRIVATE KEY-----\nxx\n")
    with pytest.raises(ValueError):
        DkimConfig(domain="shop example", selector="mail",
                   private_key=private_pem(rsa.generate_private_key(public_exponent=65537, key_size=1024),
                                           serialization.PrivateFormat.PKCS8).decode())


async def test_the_smtp_provider_signs_with_its_configured_key_once(rsa_key: rsa.RSAPrivateKey) -> None:
    pem = private_pem(rsa_key, serialization.PrivateFormat.PKCS8).decode()
    handler = RecordingHandler()
    unsigned = email()
    presigned = email(dkim=DkimKey("shop.example", "mail",
                                   private_pem(rsa_key, serialization.PrivateFormat.TraditionalOpenSSL)))
    batch = [OutgoingMessage(ref=str(i), to="zoe@example.com", channel="email",
                             payload=EmailPayload(raw=raw, envelope_from="news@shop.example",
                                                  envelope_to=("zoe@example.com",)))
             for i, raw in enumerate((unsigned, presigned))]
    config = SmtpConfig(host="127.0.0.1", port=1, security="none",
                        dkim=DkimConfig(domain="shop.example", selector="mail", private_key=pem))
    with smtp_server(handler) as server:
        async with SmtpProvider(config.model_copy(update={"port": server.port})) as smtp:
            results = await smtp.send(batch)

    assert all(r.ok for r in results)
    for received in handler.received:
        assert received.content.count(b"DKIM-Signature:") == 1
        assert dkim.verify(received.content, dnsfunc=dns_for(rsa_key))
        assert "list-unsubscribe-post" in signed_headers(received.content)
