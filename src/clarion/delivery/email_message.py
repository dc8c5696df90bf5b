"""Building the RFC 5322 bytes of one marketing email: multipart/alternative, unsubscribe headers, DKIM.

The message is written directly rather than through `email.message.EmailMessage`: the stdlib's header registry,
folding and policy machinery cost about 2.7 ms a message, most of a worker's CPU, for output this module can
write itself in a tenth of that. What it writes:

- headers in US-ASCII, folded at spaces to at most 78 columns where the value allows it; a value that is not
  plain printable ASCII becomes RFC 2047 encoded-words (UTF-8, Q or B, each at most 75 characters); From, To
  and Reply-To keep the address itself outside the encoded-words. URI-list headers (List-Unsubscribe …) are
  ASCII by construction and folded only between items, never encoded;
- bodies as UTF-8 with CRLF line breaks (a lone CR or LF becomes CRLF, the text ends with one), sent 7bit when
  that is plain short-lined ASCII, otherwise quoted-printable or base64 (whichever is shorter, 76-column lines),
  so the message is 7-bit clean and no relay needs 8BITMIME;
- a multipart/alternative boundary that does not occur in either part.

Anything outside that simple shape (an address with a quoted local part or a non-ASCII one, a group, several
addresses in one header, a display name that already holds encoded-words, an unusual custom header) is handed
to the stdlib's header machinery, exactly as before; tests/delivery/test_email_message.py checks by property
that the stdlib parser reads back what was put in.
"""

from __future__ import annotations

import binascii
import itertools
import os
import random
import re
import secrets
import time
from email import policy as email_policy
from email.utils import format_datetime, parseaddr

from clarion.delivery.channels.smtp.dkim import DkimKey, sign_message
from clarion.kit.clock import utcnow
from clarion.kit.mailbox import ADDR_SPEC

__all__ = ["DkimKey", "build_email", "new_message_id"]

# Headers build_email sets itself; a caller's `headers` may not replace them.
_RESERVED = {"from", "to", "subject", "date", "message-id", "mime-version", "content-type",
             "content-transfer-encoding", "reply-to", "list-unsubscribe", "list-unsubscribe-post",
             "dkim-signature"}
_FIELD_NAME = re.compile(r"^[!-9;-~]+$")  # RFC 5322 ftext: printable ASCII except ':'
# Headers whose value is a list of <URI>s: folded only between items, never turned into encoded-words.
_URI_LIST_HEADERS = {"list-unsubscribe", "list-unsubscribe-post", "list-help", "list-subscribe",
                     "list-post", "list-owner", "list-archive"}
MAX_LINE = 78  # RFC 5322 §2.1.1: SHOULD NOT exceed 78 characters, excluding the CRLF
_ENCODED_WORD_MAX = 75  # RFC 2047 §2
_EW_PREFIX, _EW_SUFFIX = "=?utf-8?", "?="
_EW_PAYLOAD = _ENCODED_WORD_MAX - len(_EW_PREFIX) - len("q?") - len(_EW_SUFFIX)  # 63 characters of encoded text


# Only for what the direct writer leaves to the stdlib (see the module docstring): SMTP line endings and
# 78-column folding, 7bit so non-ASCII becomes encoded-words.
_STDLIB_POLICY = email_policy.EmailPolicy(linesep="\r\n", cte_type="7bit")


def new_message_id(domain: str) -> str:
    """Unique without coordination (a random tag per process and a counter), and sorting by send time in a mail
    log (the clock first, 16 hex digits until 2262). No system call per message, unlike a random UUID."""
    return f"<{time.time_ns():016x}.{next(_message_numbers):x}.{_process_tag}@{domain}>"


def _tag_this_process() -> None:
    global _process_tag, _message_numbers
    _process_tag, _message_numbers = secrets.token_hex(8), itertools.count()


_process_tag, _message_numbers = "", itertools.count()
_tag_this_process()
os.register_at_fork(after_in_child=_tag_this_process)  # a forked child must not repeat its parent's ids


_date_of_second: tuple[float, str] = (-1.0, "")


def _date_header() -> str:
    """The Date header for now; formatted once per second (a batch builds hundreds of messages in one)."""
    global _date_of_second
    now = utcnow()
    second = now.timestamp() // 1
    if _date_of_second[0] != second:
        _date_of_second = (second, f"Date: {format_datetime(now)}\r\n")
    return _date_of_second[1]


def _check_header_value(name: str, value: str) -> str:
    if "\r" in value or "\n" in value:
        raise ValueError(f"header {name} may not contain a line break")
    return value


_NOT_IN_URI = re.compile(r"[ <>,\t]")


def _uri(value: str, what: str, schemes: tuple[str, ...]) -> str:
    _check_header_value(what, value)
    if not value.isascii() or _NOT_IN_URI.search(value):
        raise ValueError(f"{what} must be an ASCII URI without spaces, commas or angle brackets")
    if not value.lower().startswith(schemes):
        raise ValueError(f"{what} must start with {' or '.join(schemes)}")
    return value


# --- header writing ------------------------------------------------------------------------------------------

def _fold(line: str, start: int) -> str:
    """`Name: value` folded at spaces so each line has at most 78 characters where the value allows it; a run
    without spaces longer than that stays whole (RFC 5322 allows lines up to 998). `start` is the first
    position a fold may happen at (after `Name: `). Returns the header with its CRLF."""
    if len(line) <= MAX_LINE:
        return line + "\r\n"
    lines = []
    while len(line) > MAX_LINE:
        cut = line.rfind(" ", start, MAX_LINE + 1)
        while cut > start and line[cut - 1] == " ":  # never leave a line of whitespace only
            cut = line.rfind(" ", start, cut)
        if cut <= start:
            cut = line.find(" ", MAX_LINE + 1)
            while cut != -1 and line[cut - 1] == " ":
                cut = line.find(" ", cut + 1)
            if cut == -1:
                break
        lines.append(line[:cut])
        line = line[cut:]
        start = 1
    lines.append(line)
    return "\r\n".join(lines) + "\r\n"


def _fold_uri_list(name: str, value: str) -> str:
    """A list of <URI>s, folded between items only (an encoded-word is not a URL to any mailbox provider)."""
    items = [item.strip() for item in value.split(",")]
    lines = [f"{name}: {items[0]}"]
    for item in items[1:]:
        if len(lines[-1]) + 2 + len(item) <= MAX_LINE:
            lines[-1] += f", {item}"
        else:
            lines[-1] += ","
            lines.append(f" {item}")
    return "\r\n".join(lines) + "\r\n"


# Characters a Q encoded-word may carry as themselves in any header position (RFC 2047 §5 (3)).
_Q_LITERAL = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789!*+-/")
_Q_ASCII = {chr(i): (chr(i) if chr(i) in _Q_LITERAL else f"={i:02X}") for i in range(128)}
_Q_ASCII[" "] = "_"


def _q_char(ch: str) -> str:
    encoded = _Q_ASCII.get(ch)
    if encoded is None:
        encoded = "".join(f"={b:02X}" for b in ch.encode("utf-8", "surrogatepass"))
    return encoded


def _encoded_words(text: str, first_line_room: int) -> list[str]:
    """`text` as UTF-8 encoded-words of at most 75 characters each (the first one short enough to fit the
    `first_line_room` characters left on the header's first line), split between characters (RFC 2047 §5
    forbids splitting one), Q when that is shorter, B otherwise. Whitespace between the words is ignored by
    a reader, so the text's own spaces travel inside them."""
    overhead = _ENCODED_WORD_MAX - _EW_PAYLOAD
    room = max(min(first_line_room - overhead, _EW_PAYLOAD), 12)
    q = [_q_char(ch) for ch in text]
    if sum(map(len, q)) <= 4 * ((len(text.encode("utf-8", "surrogatepass")) + 2) // 3):
        words, current, size = [], [], 0
        for piece in q:
            if size + len(piece) > room and current:
                words.append("=?utf-8?q?" + "".join(current) + "?=")
                current, size, room = [], 0, _EW_PAYLOAD
            current.append(piece)
            size += len(piece)
        words.append("=?utf-8?q?" + "".join(current) + "?=")
        return words
    words, chunk, size = [], [], 0
    for ch in text:
        n = len(ch.encode("utf-8", "surrogatepass"))
        if size + n > room // 4 * 3 and chunk:  # bytes of UTF-8 a B word of `room` characters holds
            words.append(_b_word(chunk))
            chunk, size, room = [], 0, _EW_PAYLOAD
        chunk.append(ch)
        size += n
    words.append(_b_word(chunk))
    return words


def _b_word(chars: list[str]) -> str:
    data = "".join(chars).encode("utf-8", "surrogatepass")
    return "=?utf-8?b?" + binascii.b2a_base64(data, newline=False).decode("ascii") + "?="


# Plain text: printable ASCII words separated by single spaces.
_PLAIN_TEXT = re.compile(r"[!-~]+(?: [!-~]+)*")


def _is_plain(name: str, value: str) -> bool:
    """Whether `value` can be written as it is: plain text, nothing a reader would take for an encoded-word,
    and no word too long for a line of its own."""
    return (_PLAIN_TEXT.fullmatch(value) is not None and "=?" not in value
            and max(map(len, value.split(" "))) <= MAX_LINE - len(name) - 2)


def _unstructured(name: str, value: str) -> str:
    if not value:
        return f"{name}: \r\n"
    if _is_plain(name, value):
        return _fold(f"{name}: {value}", len(name) + 2)
    return _fold(f"{name}: " + " ".join(_encoded_words(value, MAX_LINE - len(name) - 2)), len(name) + 2)


# A single mailbox in one of the shapes the direct writer handles: `addr`, `phrase <addr>`, `"quoted" <addr>`.
_MAILBOX = re.compile(
    rf"\s*(?:(?P<bare>{ADDR_SPEC})"
    rf"|(?:\"(?P<quoted>(?:[^\"\\\r\n]|\\[^\r\n])*)\"|(?P<phrase>[^\"<>@,;:\\\[\]()\r\n]*?))\s*<(?P<addr>{ADDR_SPEC})>)\s*"
)
_ATOM_PHRASE = re.compile(r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+(?: [A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+)*")
_UNESCAPE = re.compile(r"\\(.)")


def _display_name(header: str, name: str) -> str:
    room = MAX_LINE - len(header) - 2
    # A name holding "=?" is always encoded: a reader could take it, even quoted, for an encoded-word.
    plain = "=?" not in name
    if plain and _ATOM_PHRASE.fullmatch(name) and max(map(len, name.split(" "))) <= room:
        return name
    if plain and name.isascii() and name.isprintable():
        quoted = '"' + name.replace("\\", "\\\\").replace('"', '\\"') + '"'
        if max(map(len, quoted.split(" "))) <= room:
            return quoted
    return " ".join(_encoded_words(name, room))


def _mailbox_header(name: str, value: str, what: str) -> str:
    """From / To / Reply-To: exactly the mailbox given, validated, with a non-ASCII display name encoded."""
    _check_header_value(what, value)
    match = _MAILBOX.fullmatch(value)
    if match is None or "=?" in value:
        # The stdlib decodes encoded-words a caller wrote ("=?utf-8?q?Zo=C3=AB?= <…>" names Zoë).
        try:
            return _stdlib_address_header(name, value, what)
        except ValueError:
            if match is None or "=?" in (match["bare"] or match["addr"]):
                raise
            # It trips over some names holding "=?" (a '.=?' did): written here, encoded, as the text it is.
    if match["bare"] is not None:
        if len(name) + 2 + len(match["bare"]) > MAX_LINE:
            # A bare address has no space to fold at; as an angle-addr on a line of its own it is the same
            # mailbox, and fits there whenever it can fit at all.
            return f"{name}:\r\n <{match['bare']}>\r\n"
        return _fold(f"{name}: {match['bare']}", len(name) + 2)
    # A display name's runs of whitespace are one space, as a phrase's are; readers disagree about any other.
    display = " ".join((_UNESCAPE.sub(r"\1", match["quoted"]) if match["quoted"] is not None
                        else match["phrase"]).split())
    if not display:
        return _fold(f"{name}: {match['addr']}", len(name) + 2)
    return _fold(f"{name}: {_display_name(name, display)} <{match['addr']}>", len(name) + 2)


def _stdlib_address_header(name: str, value: str, what: str) -> str:
    _, addr = parseaddr(value)
    if not addr or "@" not in addr:
        raise ValueError(f"{what} {value!r} is not an email address")
    return _stdlib_header(name, value)


def _stdlib_header(name: str, value: str) -> str:
    try:
        header = _STDLIB_POLICY.header_store_parse(name, value)
        return _STDLIB_POLICY.fold_binary(*header).decode("ascii")
    except (AttributeError, IndexError, TypeError) as exc:
        # The stdlib's header parser has inputs it trips over (a display name of '.=?' did, CPython 3.11):
        # such a value is refused like any other that cannot be written, not a crash.
        raise ValueError(f"header {name} cannot be written from {value!r}") from exc


def _custom_header(name: str, value: str) -> str:
    if name.lower() in _URI_LIST_HEADERS:
        if not value.isascii():
            raise ValueError(f"header {name} must be ASCII")
        return _fold_uri_list(name, value)
    if name.lower().startswith("x-") and len(name) + 2 + len(value) <= MAX_LINE and _is_plain(name, value):
        return f"{name}: {value}\r\n"
    return _stdlib_header(name, value)


# --- bodies --------------------------------------------------------------------------------------------------

_LINE_BREAK = re.compile(r"\r\n|\r|\n")
_NOT_7BIT = re.compile(r"[^\t\r\n\x20-\x7e]")
_HIGH_BYTES = bytes(range(128, 256))


def _body(text: str) -> tuple[str, str]:
    """(Content-Transfer-Encoding, encoded body ending with CRLF) of a UTF-8 text part in canonical form."""
    # Without a CR, the only line breaks are LFs: one C-level replace instead of the regular expression.
    canonical = _LINE_BREAK.sub("\r\n", text) if "\r" in text else text.replace("\n", "\r\n")
    if not canonical.endswith("\r\n"):
        canonical += "\r\n"
    if canonical.isascii():  # kept by the str itself: no scan
        if max(map(len, canonical.split("\r\n"))) <= MAX_LINE and _NOT_7BIT.search(canonical) is None:
            return "7bit", canonical
        data, high = canonical.encode("ascii"), 0
    else:
        data = canonical.encode("utf-8", "surrogatepass")
        high = len(data) - len(data.translate(None, _HIGH_BYTES))
    if len(data) + 2 * high <= len(data) * 4 // 3:
        # b2a_qp keeps CRLF as line breaks, encodes '=', controls, trailing blanks and a lone leading '.',
        # and breaks lines over 76 characters with a soft '=' break.
        return "quoted-printable", binascii.b2a_qp(data, istext=True).decode("ascii")
    encoded = binascii.b2a_base64(data, newline=False).decode("ascii")
    return "base64", "".join(encoded[i:i + 76] + "\r\n" for i in range(0, len(encoded), 76))


def _boundary(*parts: str) -> str:
    # '=_' cannot occur in quoted-printable or base64 text; a 7bit part is checked.
    while True:
        boundary = f"=_clarion_{random.getrandbits(96):024x}"
        if not any(boundary in part for part in parts):
            return boundary


# --- the message ---------------------------------------------------------------------------------------------

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
    can show pick the HTML); with html=None the message is text/plain alone. Bodies are UTF-8, sent 7bit,
    quoted-printable or base64, whichever fits. Raises ValueError on unusable input (a line break in a
    header, a bad address, a reserved header in `headers`).
    """
    head = [
        _mailbox_header("From", from_addr, "from_addr"),
        _mailbox_header("To", to_addr, "to_addr"),
    ]
    if reply_to:
        head.append(_mailbox_header("Reply-To", reply_to, "reply_to"))
    head.append(_unstructured("Subject", _check_header_value("Subject", subject)))
    head.append(_date_header())
    message_id = new_message_id(_check_header_value("message_id_domain", message_id_domain))
    if len(message_id) + 12 > MAX_LINE or not message_id.isascii() or " " in message_id:
        head.append(_stdlib_header("Message-ID", message_id))
    else:
        head.append(f"Message-ID: {message_id}\r\n")

    unsubscribe = [f"<{_uri(list_unsubscribe_url, 'list_unsubscribe_url', ('https://', 'http://'))}>"]
    if list_unsubscribe_mailto:
        mailto = list_unsubscribe_mailto
        if not mailto.lower().startswith("mailto:"):
            mailto = "mailto:" + mailto
        unsubscribe.append(f"<{_uri(mailto, 'list_unsubscribe_mailto', ('mailto:',))}>")
    head.append(_fold_uri_list("List-Unsubscribe", ", ".join(unsubscribe)))
    # RFC 8058 one-click: the receiver POSTs `List-Unsubscribe=One-Click` to the https URI above.
    head.append("List-Unsubscribe-Post: List-Unsubscribe=One-Click\r\n")

    for name, value in (headers or {}).items():
        if not _FIELD_NAME.match(name):
            raise ValueError(f"{name!r} is not a valid header name")
        if name.lower() in _RESERVED:
            raise ValueError(f"header {name} is set by build_email and cannot be overridden")
        head.append(_custom_header(name, _check_header_value(name, value)))

    head.append("MIME-Version: 1.0\r\n")
    text_cte, text_body = _body(text)
    if html is None:
        head.append('Content-Type: text/plain; charset="utf-8"\r\n')
        head.append(f"Content-Transfer-Encoding: {text_cte}\r\n\r\n")
        head.append(text_body)
    else:
        html_cte, html_body = _body(html)
        boundary = _boundary(text_body, html_body)
        head.append(f'Content-Type: multipart/alternative;\r\n boundary="{boundary}"\r\n\r\n')
        head.append(f'--{boundary}\r\nContent-Type: text/plain; charset="utf-8"\r\n'
                    f"Content-Transfer-Encoding: {text_cte}\r\n\r\n")
        head.append(text_body)
        head.append(f'\r\n--{boundary}\r\nContent-Type: text/html; charset="utf-8"\r\n'
                    f"Content-Transfer-Encoding: {html_cte}\r\n\r\n")
        head.append(html_body)
        head.append(f"\r\n--{boundary}--\r\n")
    raw = "".join(head).encode("ascii")
    return sign_message(raw, dkim) if dkim is not None else raw
