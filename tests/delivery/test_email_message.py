"""build_email: structure, unsubscribe headers (RFC 8058) and DKIM signatures that verify."""

from __future__ import annotations

import base64
import os
import re
from email import message_from_bytes, policy
from email.header import decode_header, make_header
from email.utils import parseaddr
from typing import Any

import dkim
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from clarion.delivery.channels.base import EmailPayload, OutgoingMessage
from clarion.delivery.channels.smtp import DkimConfig, SmtpConfig, SmtpProvider
from clarion.delivery.email_message import DkimKey, build_email, new_message_id
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
    args: dict[str, Any] = {
        "from_addr": "Shop <news@shop.example>", "to_addr": "Zoë Müller <zoe@example.com>",
        "subject": "Frühling: 20% off",
        "html": HTML, "text": TEXT, "reply_to": "help@shop.example", "list_unsubscribe_url": UNSUB_URL,
        "list_unsubscribe_mailto": "unsubscribe@shop.example?subject=unsubscribe",
        "message_id_domain": "shop.example",
    }
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


def test_every_message_gets_its_own_message_id_at_the_given_domain_in_send_order() -> None:
    ids = [str(message_from_bytes(email(), policy=policy.default)["Message-ID"]) for _ in range(50)]
    assert len(set(ids)) == 50
    assert all(re.fullmatch(r"<[0-9a-f]{16}\.[0-9a-f]+\.[0-9a-f]{16}@shop\.example>", i) for i in ids)
    assert [i.split(".")[0] for i in ids] == sorted(i.split(".")[0] for i in ids)  # the clock comes first


def test_a_forked_process_never_repeats_its_parents_message_ids() -> None:
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: its next id, then gone
        os.write(write, new_message_id("shop.example").encode())
        os._exit(0)
    os.close(write)
    os.waitpid(pid, 0)
    child = os.read(read, 200).decode()
    os.close(read)
    parent = new_message_id("shop.example")
    assert child.split(".")[2] != parent.split(".")[2]  # its own process tag


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


# --- the direct writer reads back through the stdlib parser exactly ------------------------------------------

_ALPHABETS = st.sampled_from([
    st.characters(min_codepoint=0x20, max_codepoint=0x7E),  # printable ASCII, specials included
    st.characters(min_codepoint=0x00, max_codepoint=0xFF, blacklist_characters="\r\n"),  # Latin-1 and controls
    st.characters(min_codepoint=0x4E00, max_codepoint=0x9FFF),  # CJK
    st.characters(min_codepoint=0x1F300, max_codepoint=0x1FAFF),  # emoji (astral)
    st.characters(blacklist_categories=("Cs",), blacklist_characters="\r\n"),  # anything but a line break
])


@st.composite
def _header_text(draw: Any, max_size: int = 120, controls: bool = True) -> str:
    alphabet = st.text(st.characters(blacklist_categories=("Cs", "Cc"))) if not controls else None
    pieces = draw(st.lists(_ALPHABETS.flatmap(lambda a: st.text(a, max_size=40)), max_size=5))
    text = draw(st.sampled_from([" ", "", "  "])).join(pieces)[:max_size]
    if alphabet is not None:  # a display name is a name: control characters have no business there
        text = "".join(ch for ch in text if ch.isprintable() or ch == " ")
    return text


_LOCAL = st.from_regex(r"[a-z0-9](?:[a-z0-9_+-]|\.[a-z0-9]){0,30}", fullmatch=True)
_DOMAIN = st.from_regex(r"[a-z0-9](?:[a-z0-9-]{0,20}[a-z0-9])?(?:\.[a-z]{2,10}){1,3}", fullmatch=True)
_ADDRESS = st.builds(lambda local, domain: f"{local}@{domain}", _LOCAL, _DOMAIN)

_BODY_LINE = st.one_of(
    _ALPHABETS.flatmap(lambda a: st.text(a, max_size=60)),
    st.sampled_from(["From here on", ".", "..", ". leading dot", "From ", "trailing space ", "tab\t",
                     "=?utf-8?q?not_a_word?=", "x" * 200, "ü" * 120, "🎉" * 50, "--", "-- ", "=", "=3D"]),
    st.text(st.sampled_from("ab =.\t€"), min_size=70, max_size=300),  # long lines to be broken
)
_BODY = st.tuples(st.lists(_BODY_LINE, max_size=12), st.lists(st.sampled_from(["\n", "\r\n", "\r"]),
                                                               min_size=12, max_size=12)).map(
    lambda lines_seps: "".join(line + sep for line, sep in zip(lines_seps[0], lines_seps[1], strict=False)))


def _mailbox(name: str, address: str, quoted: bool) -> str:
    if not name:
        return address
    if quoted:
        return '"' + name.replace("\\", "\\\\").replace('"', '\\"') + '" <' + address + ">"
    return f"{name} <{address}>"


def _canonical(text: str) -> str:
    """What a text part carries: line breaks as CRLF, ending with one (RFC 2045 canonical form)."""
    text = re.sub(r"\r\n|\r|\n", "\r\n", text)
    return text if text.endswith("\r\n") else text + "\r\n"


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(subject=_header_text(), from_name=_header_text(60, controls=False),
       to_name=_header_text(60, controls=False), reply_name=_header_text(60, controls=False),
       quoted=st.booleans(), from_address=_ADDRESS, to_address=_ADDRESS, reply_address=_ADDRESS,
       text=_BODY, html=st.one_of(st.none(), _BODY))
# The stdlib's address parser crashed on this display name (CPython 3.11): it is now written encoded, as text.
@example(subject="", from_name="", to_name="", reply_name=".=?", quoted=False, from_address="0@0.aa",
         to_address="0@0.aa", reply_address="0@0.aa", text="", html=None)
def test_any_message_parses_back_to_what_was_put_in(
        subject: str, from_name: str, to_name: str, reply_name: str, quoted: bool, from_address: str,
        to_address: str, reply_address: str, text: str, html: str | None) -> None:
    # An unquoted display name is a phrase: only what a phrase can hold, with its whitespace collapsed.
    # Either way a display name's whitespace runs are written as one space.
    def usable(name: str) -> str:
        return " ".join((name if quoted else re.sub(r'["<>@,;:\\\[\]()]', "", name)).split())

    names = {"from": usable(from_name), "to": usable(to_name), "reply-to": usable(reply_name)}
    raw = email(subject=subject, from_addr=_mailbox(names["from"], from_address, quoted),
                to_addr=_mailbox(names["to"], to_address, quoted),
                reply_to=_mailbox(names["reply-to"], reply_address, quoted), text=text, html=html)

    assert raw.isascii()
    assert b"\n" not in raw.replace(b"\r\n", b"") and b"\r" not in raw.replace(b"\r\n", b"")
    head, _, _ = raw.partition(b"\r\n\r\n")
    for line in head.split(b"\r\n"):
        # 78 columns wherever a fold is allowed: only a single unbreakable token may run longer.
        assert len(line) <= 78 or line.startswith((b"List-Unsubscribe:", b" <")), line
        assert line.strip(), "a folded header never leaves a line of whitespace only"

    msg = message_from_bytes(raw, policy=policy.default)
    assert not msg.defects
    assert str(msg["Subject"]) == subject
    legacy = message_from_bytes(raw, policy=policy.compat32)
    for header, address in (("from", from_address), ("to", to_address), ("reply-to", reply_address)):
        mailboxes = msg[header].addresses
        assert len(mailboxes) == 1
        assert mailboxes[0].addr_spec == address
        # RFC 2047 §6.2: whitespace between two adjacent encoded-words is not part of the text.
        encoded_name, legacy_address = parseaddr(legacy[header])
        assert legacy_address == address
        assert str(make_header(decode_header(encoded_name))) == names[header]
        if not re.search(r"\?=\s+=\?", encoded_name):
            # The stdlib's phrase parser keeps that whitespace (a CPython deviation from RFC 2047), so it reads
            # a display name back exactly only when no encoded-word had to be split in two.
            assert mailboxes[0].display_name == names[header]
    if html is None:
        assert msg.get_content_type() == "text/plain"
        assert msg.get_content() == _canonical(text)
    else:
        plain_part, html_part = msg.iter_parts()
        assert (plain_part.get_content_type(), html_part.get_content_type()) == ("text/plain", "text/html")
        assert plain_part.get_content() == _canonical(text)
        assert html_part.get_content() == _canonical(html)
        assert not plain_part.defects and not html_part.defects


@pytest.mark.parametrize("to_addr", ['"Doe, Jane" <jane@example.com>', "J. R. Smith <jrs@example.com>",
                                     "=?utf-8?q?Zo=C3=AB?= <zoe@example.com>", "<bare@example.com>",
                                     "  Zoë   Müller  <zoe@example.com>", '"Zoë \\"Z\\" Müller" <zoe@example.com>'])
def test_display_names_with_specials_and_encoded_words_survive(to_addr: str) -> None:
    expected_name, expected_addr = parseaddr(to_addr)
    expected_name = " ".join(expected_name.split())
    if expected_name.startswith("=?"):
        expected_name = "Zoë"
    msg = message_from_bytes(email(to_addr=to_addr), policy=policy.default)
    (mailbox,) = msg["To"].addresses
    assert (mailbox.display_name, mailbox.addr_spec) == (expected_name, expected_addr)


def test_a_long_subject_is_folded_and_a_long_unsubscribe_url_is_never_encoded() -> None:
    subject = "Spring deals on everything in the store " * 6 + "— jetzt mit Grüßen aus Köln 春のセール"
    raw = email(subject=subject, list_unsubscribe_url=UNSUB_URL)
    head = raw.split(b"\r\n\r\n", 1)[0]
    assert all(len(line) <= 78 for line in head.split(b"\r\n") if not line.startswith(b"List-Unsubscribe:"))
    assert f"List-Unsubscribe: <{UNSUB_URL}>,".encode() in head
    assert str(message_from_bytes(raw, policy=policy.default)["Subject"]) == subject


def test_a_bare_address_too_long_for_its_header_line_moves_to_a_line_of_its_own() -> None:
    address = "0000000000000.0.0.0.0.0.0.0.0.0.0@00.aaaaaaaaaa.aaaaaaaaaa.aaaaaaaaaa"  # "Reply-To: " + it: 79
    raw = email(reply_to=address)
    head = raw.split(b"\r\n\r\n", 1)[0]
    assert f"Reply-To:\r\n <{address}>\r\n".encode() in head + b"\r\n"
    assert all(len(line) <= 78 for line in head.split(b"\r\n") if not line.startswith(b"List-Unsubscribe:"))
    (mailbox,) = message_from_bytes(raw, policy=policy.default)["Reply-To"].addresses
    assert (mailbox.display_name, mailbox.addr_spec) == ("", address)


def test_the_boundary_never_occurs_in_a_part() -> None:
    import clarion.delivery.email_message as em

    # A 7bit part that happens to hold the first boundary drawn forces another draw.
    draws = iter([0xABC, 0xABC, 0xDEF])
    original = em.random.getrandbits
    em.random.getrandbits = lambda bits: next(draws)  # type: ignore[assignment]
    try:
        taken = f"=_clarion_{0xABC:024x}"
        raw = email(text=f"--{taken}\nplain", html="<p>x</p>")
    finally:
        em.random.getrandbits = original  # type: ignore[assignment]
    assert f'boundary="=_clarion_{0xDEF:024x}"'.encode() in raw
    msg = message_from_bytes(raw, policy=policy.default)
    assert [p.get_content() for p in msg.iter_parts()] == [f"--{taken}\r\nplain\r\n", "<p>x</p>\r\n"]
