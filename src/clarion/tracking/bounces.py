"""Reading bounce messages: RFC 3464 delivery-status fields first, flufl.bounce for everything else.

Pure functions over raw message bytes; what a bounce does to recipients and contacts is the service's business.

- A `multipart/report; report-type=delivery-status` message is read field by field: each per-recipient block's
  Final-Recipient, Action and Status decide. `failed` + 5.x.x is a hard bounce; `delayed`, or any 4.x.x, is
  soft; `delivered`, `relayed` and `expanded` are not bounces at all.
- Anything else that is clearly an automatic reply (RFC 3834 `Auto-Submitted: auto-replied`, vacation and
  out-of-office markers) is not a bounce. Postfix marks its own DSNs `auto-replied` too, which is why the DSN
  check comes first.
- Otherwise flufl.bounce's detectors (qmail, Exim, old Exchange and friends) name the failing addresses.
- The returned original message (message/rfc822 or text/rfc822-headers) gives the Message-ID we sent, which
  finds the campaign recipient; Final-Recipient is the fallback to find the contact.
"""

from __future__ import annotations

import email
import email.message
import email.policy
import re
from dataclasses import dataclass, field
from email.parser import HeaderParser
from typing import Literal

from flufl.bounce import all_failures

Kind = Literal["hard", "soft"]

_STATUS = re.compile(r"\b([245])\.(\d{1,3})\.(\d{1,3})\b")
_QUOTED_MESSAGE_ID = re.compile(r"^Message-ID:[ \t]*(<[^>\r\n]+>)", re.IGNORECASE | re.MULTILINE)
_NOT_BOUNCES = {"delivered", "relayed", "expanded"}
_AUTO_REPLY_SUBJECT = re.compile(
    r"^\s*(auto(matic)?[ -]?(reply|response|antwort)|out of (the )?office|vacation|abwesenheit|"
    r"absence|away from|i am away|r[ée]ponse automatique)", re.IGNORECASE)


@dataclass(frozen=True)
class BouncedAddress:
    email: str
    kind: Kind
    action: str | None = None
    status: str | None = None
    diagnostic: str | None = None


@dataclass(frozen=True)
class BounceReport:
    """What one incoming message says. `recipients` is empty when it is not a bounce (`ignored` says why)."""

    recipients: list[BouncedAddress] = field(default_factory=list)
    original_message_id: str | None = None
    ignored: str | None = None  # "auto_reply" | "no_failure_found" | "not_a_bounce"
    source: str | None = None  # "dsn" | "heuristic"


def _address(value: str | None) -> str | None:
    """`rfc822; Ann@Example.com` → `ann@example.com`."""
    if not value:
        return None
    _, _, address = value.rpartition(";")
    address = address.strip().strip("<>").strip()
    return address.lower() if "@" in address else None


def _header(block: email.message.Message, name: str) -> str | None:
    value = block.get(name)
    return " ".join(str(value).split()) if value is not None else None


def classify(action: str | None, status: str | None) -> Kind | None:
    """hard, soft or None (not a failure) from a per-recipient Action and Status."""
    act = (action or "").strip().lower()
    if act in _NOT_BOUNCES:
        return None
    match = _STATUS.search(status or "")
    klass = match.group(1) if match else None
    if klass == "2":
        return None
    if act == "delayed" or klass == "4":
        return "soft"
    if act == "failed" or klass == "5":
        return "hard"
    return None


def normalise_message_id(value: str | None) -> str | None:
    if not value:
        return None
    value = value.strip()
    if not value:
        return None
    return value if value.startswith("<") else f"<{value.strip('<>')}>"


def _original_message_id(msg: email.message.Message) -> str | None:
    for part in msg.walk():
        content_type = part.get_content_type()
        if content_type == "message/rfc822":
            payload = part.get_payload()
            inner = payload[0] if isinstance(payload, list) and payload else None
            if isinstance(inner, email.message.Message) and inner.get("Message-ID"):
                return normalise_message_id(str(inner["Message-ID"]))
        elif content_type == "text/rfc822-headers":
            text = part.get_payload(decode=True) or b""
            headers = HeaderParser().parsestr(text.decode("utf-8", "replace"))
            if headers.get("Message-ID"):
                return normalise_message_id(str(headers["Message-ID"]))
    # Bounces that are not RFC 3464 (qmail, old gateways) quote the returned message as plain text.
    own = normalise_message_id(str(msg.get("Message-ID") or "")) or ""
    for part in msg.walk():
        if part.get_content_maintype() != "text":
            continue
        text = (part.get_payload(decode=True) or b"").decode("utf-8", "replace")
        quoted = [normalise_message_id(m) for m in _QUOTED_MESSAGE_ID.findall(text)]
        quoted = [m for m in quoted if m and m != own]
        if quoted:
            return quoted[-1]
    return None


def _delivery_status_blocks(msg: email.message.Message) -> list[email.message.Message] | None:
    """The per-recipient header blocks of the message/delivery-status part, or None when there is none."""
    for part in msg.walk():
        if part.get_content_type() != "message/delivery-status":
            continue
        payload = part.get_payload()
        if isinstance(payload, list):
            blocks = [b for b in payload if isinstance(b, email.message.Message)]
        else:  # a transfer-encoded status part arrives as text: parse its blocks ourselves
            raw = part.get_payload(decode=True) or b""
            text = raw.decode("utf-8", "replace").replace("\r\n", "\n")
            blocks = [HeaderParser().parsestr(chunk) for chunk in re.split(r"\n\s*\n", text) if chunk.strip()]
        return [b for b in blocks if b.get("Final-Recipient") or b.get("Original-Recipient")]
    return None


def _is_auto_reply(msg: email.message.Message) -> bool:
    auto_submitted = (_header(msg, "Auto-Submitted") or "").lower()
    if auto_submitted.startswith("auto-replied"):
        return True
    if any(msg.get(name) for name in ("X-Autoreply", "X-Autorespond", "X-Vacation")):
        return True
    precedence = (_header(msg, "Precedence") or "").lower()
    return precedence == "auto_reply" or bool(_AUTO_REPLY_SUBJECT.match(_header(msg, "Subject") or ""))


def parse_bounce(raw: bytes) -> BounceReport:
    msg = email.message_from_bytes(raw)
    original = _original_message_id(msg)
    blocks = _delivery_status_blocks(msg)
    if blocks is not None:
        found: list[BouncedAddress] = []
        for block in blocks:
            address = _address(_header(block, "Final-Recipient")) or _address(_header(block, "Original-Recipient"))
            action, status = _header(block, "Action"), _header(block, "Status")
            kind = classify(action, status)
            if address and kind:
                found.append(BouncedAddress(address, kind, action and action.lower(), status,
                                            _header(block, "Diagnostic-Code")))
        if found:
            return BounceReport(found, original, source="dsn")
        return BounceReport([], original, ignored="not_a_bounce", source="dsn")
    if _is_auto_reply(msg):
        return BounceReport([], original, ignored="auto_reply")
    try:
        temporary, permanent = all_failures(msg)
    except (IndexError, KeyError, ValueError, UnicodeError, AttributeError, TypeError):
        # flufl.bounce's heuristic detectors assume bounce-shaped input and can trip over arbitrary bytes;
        # anything they cannot read is simply not a bounce we recognise.
        return BounceReport([], original, ignored="unreadable")
    found = [BouncedAddress(a.decode("utf-8", "replace").lower(), "hard") for a in sorted(permanent)]
    found += [BouncedAddress(a.decode("utf-8", "replace").lower(), "soft") for a in sorted(temporary - permanent)]
    if not found:
        return BounceReport([], original, ignored="no_failure_found")
    return BounceReport(found, original, source="heuristic")
