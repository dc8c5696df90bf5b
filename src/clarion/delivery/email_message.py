"""Building the RFC 5322 bytes of one marketing email: multipart/alternative, unsubscribe headers, DKIM."""

from __future__ import annotations

import re
from email import policy as email_policy
from email.message import EmailMessage
from email.utils import format_datetime, parseaddr

from clarion.delivery.channels.smtp.dkim import DkimKey, sign_message
from clarion.kit.clock import utcnow
from clarion.kit.ids import new_id

__all__ = ["DkimKey", "build_email", "new_message_id"]

# Headers build_email sets itself; a caller's `headers` may not replace them.
_RESERVED = {"from", "to", "subject", "date", "message-id", "mime-version", "content-type",
             "content-transfer-encoding", "reply-to", "list-unsubscribe", "list-unsubscribe-post",
             "dkim-signature"}
_FIELD_NAME = re.compile(r"^[!-9;-~]+$")  # RFC 5322 ftext: printable ASCII except ':'
# Headers whose value is a list of <URI>s: folded only between items, never turned into encoded-words.
_URI_LIST_HEADERS = {"list-unsubscribe", "list-unsubscribe-post", "list-help", "list-subscribe",
                     "list-post", "list-owner", "list-archive"}


class _Policy(email_policy.EmailPolicy):
    """SMTP policy (CRLF, 78-column folding) except for URI-list headers.

    The stdlib folds an over-long unstructured value by rewriting it as RFC 2047 encoded-words, which turns
    `<https://…/t/u/TOKEN>` into `=?utf-8?q?=3Chttps…?=` that no mailbox provider reads as a URL. These
    headers are ASCII by construction, so they are folded by hand at the commas between URIs.
    """

    def fold(self, name: str, value: str) -> str:
        if name.lower() in _URI_LIST_HEADERS:
            return self._fold_uri_list(name, str(value))
        return super().fold(name, value)

    def fold_binary(self, name: str, value: str) -> bytes:
        if name.lower() in _URI_LIST_HEADERS:
            return self._fold_uri_list(name, str(value)).encode("ascii")
        return super().fold_binary(name, value)

    def _fold_uri_list(self, name: str, value: str) -> str:
        items = [item.strip() for item in value.split(",")]
        lines = [f"{name}: {items[0]}"]
        for item in items[1:]:
            if len(lines[-1]) + 2 + len(item) <= (self.max_line_length or 78):
                lines[-1] += f", {item}"
            else:
                lines[-1] += ","
                lines.append(f" {item}")
        return self.linesep.join(lines) + self.linesep


# cte_type 7bit: bodies go out quoted-printable or base64, so no relay needs 8BITMIME.
_POLICY = _Policy(linesep="\r\n", cte_type="7bit")


def new_message_id(domain: str) -> str:
    # uuid7: unique without coordination, and sorts by send time in a mail log.
    return f"<{new_id().hex}@{domain}>"


def _check_header_value(name: str, value: str) -> str:
    if "\r" in value or "\n" in value:
        raise ValueError(f"header {name} may not contain a line break")
    return value


def _address(value: str, what: str) -> str:
    _check_header_value(what, value)
    _, addr = parseaddr(value)
    if not addr or "@" not in addr:
        raise ValueError(f"{what} {value!r} is not an email address")
    return value


def _uri(value: str, what: str, schemes: tuple[str, ...]) -> str:
    _check_header_value(what, value)
    if not value.isascii() or any(c in value for c in " <>,\t"):
        raise ValueError(f"{what} must be an ASCII URI without spaces, commas or angle brackets")
    if not value.lower().startswith(schemes):
        raise ValueError(f"{what} must start with {' or '.join(schemes)}")
    return value


def build_email(
    *,
    from_addr: str,
    to_addr: str,
    subject: str,
    html: str | None,
    text: str,
    reply_to: str | None = None,
    list_unsubscribe_url: str,
    list_unsubscribe_mailto: str | None = None,
    message_id_domain: str,
    headers: dict[str, str] | None = None,
    dkim: DkimKey | None = None,
) -> bytes:
    """One marketing message as RFC 5322 bytes with CRLF line endings.

    text and html become a multipart/alternative (text first, so clients that prefer the last part they
    can show pick the HTML); with html=None the message is text/plain alone. Bodies are UTF-8 and the
    stdlib picks 7bit, quoted-printable or base64, whichever fits. Raises ValueError on unusable input
    (a line break in a header, a bad address, a reserved header in `headers`).
    """
    msg = EmailMessage(policy=_POLICY)
    msg["From"] = _address(from_addr, "from_addr")
    msg["To"] = _address(to_addr, "to_addr")
    if reply_to:
        msg["Reply-To"] = _address(reply_to, "reply_to")
    msg["Subject"] = _check_header_value("Subject", subject)
    msg["Date"] = format_datetime(utcnow())
    msg["Message-ID"] = new_message_id(_check_header_value("message_id_domain", message_id_domain))

    unsubscribe = [f"<{_uri(list_unsubscribe_url, 'list_unsubscribe_url', ('https://', 'http://'))}>"]
    if list_unsubscribe_mailto:
        mailto = list_unsubscribe_mailto
        if not mailto.lower().startswith("mailto:"):
            mailto = "mailto:" + mailto
        unsubscribe.append(f"<{_uri(mailto, 'list_unsubscribe_mailto', ('mailto:',))}>")
    msg["List-Unsubscribe"] = ", ".join(unsubscribe)
    # RFC 8058 one-click: the receiver POSTs `List-Unsubscribe=One-Click` to the https URI above.
    msg["List-Unsubscribe-Post"] = "List-Unsubscribe=One-Click"

    for name, value in (headers or {}).items():
        if not _FIELD_NAME.match(name):
            raise ValueError(f"{name!r} is not a valid header name")
        if name.lower() in _RESERVED:
            raise ValueError(f"header {name} is set by build_email and cannot be overridden")
        msg[name] = _check_header_value(name, value)

    msg.set_content(text, charset="utf-8")
    if html is not None:
        msg.add_alternative(html, subtype="html", charset="utf-8")
        for part in msg.iter_parts():
            # add_alternative() gives each body part its own MIME-Version; it belongs on the top level only.
            del part["MIME-Version"]

    raw = msg.as_bytes(policy=_POLICY)
    return sign_message(raw, dkim) if dkim is not None else raw

