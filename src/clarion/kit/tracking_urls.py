"""Tracked links for email HTML: signed tracking URLs, link extraction and rewriting, the open pixel.

Pure functions. They live in kit/ because the dispatcher (delivery) builds tracked messages and the tracking
endpoints (a higher layer) read the same tokens back; neither may import the other.

Tokens come from kit.signing with one purpose per kind of URL, so a token minted for one use never verifies
for another: "open" (recipient_id,), "click" (recipient_id, link_id), "unsub" (recipient_id,). The click token
names the link by id, never by URL: the endpoint looks the destination up, so nobody can turn our domain into
an open redirect.
"""

from __future__ import annotations

import html as html_lib
import re
from collections.abc import Iterable, Mapping
from functools import lru_cache

from clarion.kit.signing import signer_for

OPEN, CLICK, UNSUBSCRIBE = "open", "click", "unsub"
# How many integer ids each purpose's token carries; anything else is not a token we issued.
_PAYLOAD_ARITY = {OPEN: 1, CLICK: 2, UNSUBSCRIBE: 1}
_PATHS = {OPEN: "/t/o/", CLICK: "/t/c/", UNSUBSCRIBE: "/t/u/"}

NOTRACK_ATTRIBUTE = "data-clarion-notrack"

# An HTML comment (left alone: Outlook conditional blocks live there) or an <a …> start tag.
_COMMENT_OR_ANCHOR = re.compile(r"<!--.*?-->|<a(?=[\s>/])([^>]*)>", re.IGNORECASE | re.DOTALL)
_ATTRIBUTE = re.compile(
    r"""([^\s"'>/=]+)(?:\s*=\s*(?:"([^"]*)"|'([^']*)'|([^\s"'<>`]+)))?""",
)
_HTTP_URL = re.compile(r"^https?://[^\s/?#]+", re.IGNORECASE)
# A URL that already points at one of our tracking endpoints (e.g. the unsubscribe link): never wrapped again.
_TRACKING_PATH = re.compile(r"^https?://[^/]+(?:/[^?#]*)?/t/[ocu]/[A-Za-z0-9._-]+(?:\.gif)?(?:[?#].*)?$",
                            re.IGNORECASE)
_BODY_CLOSE = re.compile(r"</body\s*>", re.IGNORECASE)


def _token(secret: str, purpose: str, payload: tuple[int, ...]) -> str:
    return signer_for(secret).sign(purpose, payload)


def open_url(base_url: str, secret: str, recipient_id: int) -> str:
    return f"{base_url.rstrip('/')}{_PATHS[OPEN]}{_token(secret, OPEN, (recipient_id,))}.gif"


def click_url(base_url: str, secret: str, recipient_id: int, link_id: int) -> str:
    return f"{_click_prefix(base_url)}{_token(secret, CLICK, (recipient_id, link_id))}"


def _click_prefix(base_url: str) -> str:
    return f"{base_url.rstrip('/')}{_PATHS[CLICK]}"


def unsubscribe_url(base_url: str, secret: str, recipient_id: int) -> str:
    return unsubscribe_url_of(base_url, unsubscribe_token(secret, recipient_id))


def unsubscribe_url_of(base_url: str, token: str) -> str:
    """The one-click unsubscribe URL of an unsubscribe_token."""
    return f"{base_url.rstrip('/')}{_PATHS[UNSUBSCRIBE]}{token}"


def unsubscribe_token(secret: str, recipient_id: int) -> str:
    """The bare token, for callers that build their own URL form (e.g. a mailto: List-Unsubscribe)."""
    return _token(secret, UNSUBSCRIBE, (recipient_id,))


def parse_token(secret: str, purpose: str, token: str) -> tuple[int, ...] | None:
    """The ids a token names if it verifies for `purpose` and has that purpose's shape, else None."""
    arity = _PAYLOAD_ARITY.get(purpose)
    if arity is None:
        raise ValueError(f"unknown tracking purpose {purpose!r}")
    payload = signer_for(secret).verify(purpose, token)
    if payload is None or len(payload) != arity:
        return None
    if not all(isinstance(item, int) and not isinstance(item, bool) and item > 0 for item in payload):
        return None
    return tuple(int(item) for item in payload)  # type: ignore[arg-type]


def _attributes(raw: str) -> list[tuple[str, str | None, re.Match[str]]]:
    """(lower-cased name, unescaped value or None, match) for each attribute of a start tag's inside."""
    found = []
    for match in _ATTRIBUTE.finditer(raw):
        value = next((v for v in match.group(2, 3, 4) if v is not None), None)
        found.append((match.group(1).lower(), None if value is None else html_lib.unescape(value), match))
    return found


@lru_cache(maxsize=4096)
def _trackable_href(inside: str) -> tuple[str, int, int] | None:
    """For the inside of an `<a …>` start tag: the link's URL and where its href attribute sits in `inside`, when
    the link should be tracked. Cached: a campaign's messages carry the same anchors over and over."""
    attrs = _attributes(inside)
    if any(name == NOTRACK_ATTRIBUTE for name, _, _ in attrs):
        return None
    href = next(((value, match) for name, value, match in attrs if name == "href"), None)
    if href is None or href[0] is None:
        return None
    url = href[0].strip()
    if not _HTTP_URL.match(url) or _TRACKING_PATH.match(url) or "{{" in url or "{%" in url:
        return None
    start, end = href[1].span()
    return url, start, end


def extract_links(html: str, *, skip: Iterable[str] = ()) -> list[str]:
    """Trackable link URLs (http/https `<a href>`), each once, in document order.

    Left alone: links marked `data-clarion-notrack`, non-http schemes (mailto:, tel:, #anchors, relative),
    links inside HTML comments, links already pointing at our /t/ endpoints (the unsubscribe URL), leftover
    template syntax, and any URL in `skip`. URLs are returned with HTML entities decoded (`&amp;` → `&`).
    """
    skipped = set(skip)
    urls: dict[str, None] = {}
    for match in _COMMENT_OR_ANCHOR.finditer(html):
        if match.group(1) is None:
            continue
        found = _trackable_href(match.group(1))
        if found is not None and found[0] not in skipped:
            urls.setdefault(found[0], None)
    return list(urls)


def rewrite_links(html: str, link_ids: Mapping[str, int], *, base_url: str, secret: str,
                  recipient_id: int) -> str:
    """Point every trackable link whose URL is in `link_ids` at its click-tracking URL; nothing else changes."""
    # A token is URL-safe text ([A-Za-z0-9._-]): only the install's base URL could need HTML escaping.
    prefix = html_lib.escape(_click_prefix(base_url), quote=True)
    signer = signer_for(secret)

    def replace(match: re.Match[str]) -> str:
        inside = match.group(1)
        if inside is None:
            return match.group(0)
        found = _trackable_href(inside)
        if found is None or found[0] not in link_ids:
            return match.group(0)
        url, start, end = found
        token = signer.sign(CLICK, (recipient_id, link_ids[url]))
        return f'<a{inside[:start]}href="{prefix}{token}"{inside[end:]}>'

    return _COMMENT_OR_ANCHOR.sub(replace, html)


def open_pixel_tag(url: str) -> str:
    return (f'<img src="{html_lib.escape(url, quote=True)}" width="1" height="1" alt="" border="0" '
            'style="display:block;width:1px;height:1px;border:0;margin:0;padding:0" />')


def add_open_pixel(html: str, url: str) -> str:
    """The document with a 1×1 tracking image just before its last `</body>`, or at the end if it has none."""
    tag = open_pixel_tag(url)
    at = _last_body_close(html)
    return html + tag if at == -1 else html[:at] + tag + html[at:]


def _last_body_close(html: str) -> int:
    """Where the last `</body>` starts, or -1. ASCII HTML (as css_inline writes it) is searched from its end."""
    if not html.isascii():  # lower() could change lengths, and with them positions
        closes = list(_BODY_CLOSE.finditer(html))
        return closes[-1].start() if closes else -1
    lower = html.lower()
    at = lower.rfind("</body")
    while at != -1 and not _BODY_CLOSE.match(html, at):
        at = lower.rfind("</body", 0, at)
    return at
