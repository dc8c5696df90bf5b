"""The plain-text part of an HTML email: html_to_text, and a faster way to the same text for a template that is
rendered for many contacts.

html_to_text parses each rendered message, and most of that work is the same for every contact of a campaign:
only the template's `{{ … }}` outputs differ. A TextPlan parses the *template* once and keeps the calls the
text extractor receives, with the outputs left in the text and quoted attribute values they sit in; per message
only those pieces are rendered, and the calls replayed. The text is exactly html_to_text's:

- the plan exists only for templates whose template syntax is all plain outputs inside text or quoted attribute
  values (no tags, no whitespace control, nothing in a tag name, comment or declaration); otherwise None;
- an escaped output cannot change how the HTML parses, but a piece that renders unescaped markup (a `<`, or the
  attribute's own quote) could, so then the plan gives up on that message and the caller parses it whole;
- entities are decoded exactly where and how the parser decodes them, on the rendered raw text.
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from html import parser as html_parser
from html import unescape
from html.parser import HTMLParser
from typing import Any

_BLOCK_TAGS = {"p", "div", "section", "article", "header", "footer", "table", "tr", "ul", "ol", "blockquote",
               "h1", "h2", "h3", "h4", "h5", "h6", "pre", "hr", "center", "main", "aside", "nav", "form"}
_SKIPPED_TAGS = {"style", "script", "head", "title", "template", "noscript"}


class _TextExtractor(HTMLParser):
    """Collects readable text: paragraphs and line breaks kept, links as "text (url)", entities decoded."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.lines: list[str] = []
        self.current: list[str] = []
        self.skip_depth = 0
        self.pre_depth = 0
        self.links: list[tuple[str | None, int]] = []
        self.pending_blank = False

    # A line is a list of fragments; whitespace inside it is collapsed when the line ends.
    def _end_line(self, *, blank: bool = False) -> None:
        text = "".join(self.current)
        line = text if self.pre_depth else " ".join(text.split())
        self.current = []
        if line:
            if self.pending_blank and self.lines and self.lines[-1] != "":
                self.lines.append("")
            self.lines.append(line)
            self.pending_blank = False
        if blank:
            self.pending_blank = True

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in _SKIPPED_TAGS:
            self.skip_depth += 1
        elif tag == "br":
            self._end_line()
        elif tag in _BLOCK_TAGS:
            self._end_line(blank=True)
            if tag == "pre":
                self.pre_depth += 1
        elif tag == "li":
            self._end_line()
            self.current.append("- ")
        elif tag in ("td", "th"):
            self.current.append(" ")
        elif tag == "a":
            self.links.append((dict(attrs).get("href"), len("".join(self.current))))
        elif tag == "img":
            alt = dict(attrs).get("alt")
            if alt:
                self.current.append(alt)

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.handle_starttag(tag, attrs)
        if tag in _SKIPPED_TAGS:
            self.skip_depth -= 1

    def handle_endtag(self, tag: str) -> None:
        if tag in _SKIPPED_TAGS:
            self.skip_depth = max(0, self.skip_depth - 1)
        elif tag == "a" and self.links:
            href, start = self.links.pop()
            label = " ".join("".join(self.current)[start:].split())
            if href and not href.startswith(("#", "javascript:")):
                if not label:
                    self.current.append(href)
                elif label not in (href, href.removeprefix("mailto:")):
                    self.current.append(f" ({href})")
        elif tag in _BLOCK_TAGS:
            if tag == "pre":
                self.pre_depth = max(0, self.pre_depth - 1)
            self._end_line(blank=True)
        elif tag == "li":
            self._end_line()

    def handle_data(self, data: str) -> None:
        if not self.skip_depth:
            self.current.append(data)

    def text(self) -> str:
        self._end_line()
        return "\n".join(self.lines).strip() + "\n" if self.lines else ""


def html_to_text(html: str) -> str:
    """A readable plain-text version of an HTML email."""
    parser = _TextExtractor()
    parser.feed(html)
    parser.close()
    return parser.text()


# --- the plan -------------------------------------------------------------------------------------------------

OUTPUT_OPEN = "{{"
# The parser's own patterns for a start tag's name and attributes, so a raw tag is split exactly as the parser
# splits it. Not documented API: on a Python without them there is no plan, and every message is parsed.
_TAG_NAME = getattr(html_parser, "tagfind_tolerant", None)
_ATTRIBUTE = getattr(html_parser, "attrfind_tolerant", None)
# Template syntax a plan cannot follow: tags and comments (they may add, drop or repeat markup) and whitespace
# control (it may reach across the pieces' edges).
_UNSUPPORTED = re.compile(r"\{%|\{#|\{\{-|-\}\}")


@dataclass(frozen=True, slots=True)
class _Piece:
    """Raw template text holding outputs, rendered per message. `decode`: the parser decodes entities there (text
    outside <script>/<style>, and attribute values). `forbidden`: a character whose appearance in the rendered
    piece would change how the document parses (nowhere in the raw text, by construction)."""

    source: str
    decode: bool
    forbidden: str


Value = str | _Piece | None
_Call = tuple[str, str, object]  # (handler, tag or "", data value or attribute list)


class TextPlan:
    """html_to_text of a template's rendering, computed from one parse of the template (see the module)."""

    # The pieces are rendered together, as one template with a separator between them. The separator has no
    # border (it starts with a character found nowhere else in it), so it can only be found where it was put or
    # wholly inside a rendered piece, which then shows as one piece too many: such a message is parsed whole.
    _SEPARATOR = f"\x1e{secrets.token_hex(8)}\x1f"

    def __init__(self, calls: list[_Call], pieces: list[_Piece]) -> None:
        self._pieces = list(dict.fromkeys(pieces))
        index = {piece: i for i, piece in enumerate(self._pieces)}
        self.source = self._SEPARATOR.join(piece.source for piece in self._pieces)
        # Each call as (handler, tag, data or attributes, which pieces it needs): data is a piece's index when
        # rendered; attributes are (name, value, piece index or -1).
        self._calls: list[tuple[str, str, Any, bool]] = []
        for handler, tag, payload in calls:
            if handler == "data":
                dynamic = isinstance(payload, _Piece)
                self._calls.append((handler, tag, index[payload] if dynamic else payload, dynamic))
            elif handler == "endtag":
                self._calls.append((handler, tag, None, False))
            else:
                attrs = [(name, None, index[value]) if isinstance(value, _Piece) else (name, value, -1)
                         for name, value in payload]  # type: ignore[attr-defined]
                dynamic = any(i >= 0 for _, _, i in attrs)
                self._calls.append((handler, tag, attrs if dynamic else [(n, v) for n, v, _ in attrs], dynamic))

    def text(self, render: Callable[[str], str]) -> str | None:
        """The text part for one message, `render` rendering template source (`self.source`) for it; None when a
        piece rendered markup (the caller then parses the whole rendered HTML)."""
        rendered = render(self.source).split(self._SEPARATOR)
        if len(rendered) != len(self._pieces):
            return None
        values: list[str] = []
        for piece, value in zip(self._pieces, rendered, strict=True):
            if piece.forbidden in value:
                return None
            values.append(unescape(value) if piece.decode and value else value)
        out = _TextExtractor()
        handlers = {"data": out.handle_data, "endtag": out.handle_endtag, "starttag": out.handle_starttag,
                    "startendtag": out.handle_startendtag}
        for handler, tag, payload, dynamic in self._calls:
            if handler == "data":
                out.handle_data(values[payload] if dynamic else payload)
            elif handler == "endtag":
                out.handle_endtag(tag)
            else:
                handlers[handler](tag, [(name, values[i] if i >= 0 else value) for name, value, i in payload]
                                  if dynamic else payload)
        return out.text()


def plan_text(source: str, *, piece_ok: Callable[[str], bool]) -> TextPlan | None:
    """The TextPlan of an HTML template, or None when its template syntax is beyond what a plan can follow.
    `piece_ok` says whether a piece of template source is a template on its own (it compiles)."""
    if OUTPUT_OPEN not in source or _UNSUPPORTED.search(source) or _TAG_NAME is None or _ATTRIBUTE is None:
        return None
    recorder = _Recorder(source)
    recorder.feed(source)
    recorder.close()
    return recorder.plan(piece_ok)


class _Recorder(HTMLParser):
    """Parses the template like _TextExtractor would parse its rendering, noting each call and where it started."""

    def __init__(self, source: str) -> None:
        super().__init__(convert_charrefs=True)
        self.source = source
        self.line_starts = [0] + [m.end() for m in re.finditer("\n", source)]
        # (offset, handler, tag, data or attrs, in <script>/<style>) in document order
        self.events: list[tuple[int, str, str, object, bool]] = []
        self.broken = False

    def _offset(self) -> int:
        line, column = self.getpos()
        return self.line_starts[line - 1] + column

    def _note(self, handler: str, tag: str = "", payload: object = None) -> None:
        self.events.append((self._offset(), handler, tag, payload, self.cdata_elem is not None))

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self._note("starttag", tag, self._attributes(attrs))

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self._note("startendtag", tag, self._attributes(attrs))

    def handle_endtag(self, tag: str) -> None:
        self._note("endtag", tag)

    def handle_data(self, data: str) -> None:
        self._note("data", "", data)

    # Calls the extractor ignores still end the text before them.
    def handle_comment(self, data: str) -> None:
        self._note("other")

    def handle_decl(self, decl: str) -> None:
        self._note("other")

    def handle_pi(self, data: str) -> None:
        self._note("other")

    def unknown_decl(self, data: str) -> None:
        self._note("other")

    def _attributes(self, parsed: list[tuple[str, str | None]]) -> list[tuple[str, Value]]:
        """The tag's attributes, those holding outputs as pieces of their raw quoted text. The raw tag is split
        with the parser's own patterns, and must give back exactly the attributes the parser reported."""
        raw = self.get_starttag_text() or ""
        found: list[tuple[str, Value]] = []
        reparsed: list[tuple[str, str | None]] = []  # what the parser reports for them, to check we agree
        assert _TAG_NAME is not None and _ATTRIBUTE is not None  # plan_text checked
        match = _TAG_NAME.match(raw, 1)
        at = match.end() if match else len(raw)
        while at < len(raw):
            m = _ATTRIBUTE.match(raw, at)
            if not m:
                break
            at = m.end()
            name, rest, value = m.group(1, 2, 3)
            name = name.lower()
            if not rest:
                found.append((name, None))
                reparsed.append((name, None))
                continue
            quote = value[:1] if value[:1] in ("'", '"') and value[:1] == value[-1:] else ""
            inner = value[1:-1] if quote else value
            decoded = unescape(inner) if inner else inner
            reparsed.append((name, decoded))
            if OUTPUT_OPEN not in inner:
                found.append((name, decoded))
            elif quote:
                found.append((name, _Piece(inner, decode=True, forbidden=quote)))
            else:
                self.broken = True  # unquoted: a space in the rendered value would split the attribute
        if reparsed != list(parsed):
            self.broken = True
        return found

    def plan(self, piece_ok: Callable[[str], bool]) -> TextPlan | None:
        if self.broken:
            return None
        source = self.source
        covered = 0  # outputs found in text pieces and attribute values; any other is out of a plan's reach
        calls: list[_Call] = []
        pieces: list[_Piece] = []
        ends = [offset for offset, *_ in self.events[1:]] + [len(source)]
        for (offset, handler, tag, payload, in_cdata), end in zip(self.events, ends, strict=True):
            if handler == "other":
                continue
            if handler == "data":
                raw = source[offset:end]
                expected = raw if in_cdata else unescape(raw)
                if payload != expected:
                    return None  # the parser consumed this text some other way: do not second-guess it
                if OUTPUT_OPEN in raw:
                    if raw.startswith("<") or not piece_ok(raw):
                        return None  # text the parser passes on raw (a broken tag), or an output cut in two
                    if raw.startswith(OUTPUT_OPEN) and source[offset - 1:offset] == "<":
                        return None  # after a bare "<", a rendered letter would open a tag
                    covered += raw.count(OUTPUT_OPEN)
                    payload = _Piece(raw, decode=not in_cdata, forbidden="<")
                    pieces.append(payload)
            else:
                for _, value in payload or ():  # type: ignore[attr-defined]
                    if isinstance(value, _Piece):
                        if not piece_ok(value.source):
                            return None
                        covered += value.source.count(OUTPUT_OPEN)
                        pieces.append(value)
            calls.append((handler, tag, payload))
        if covered != source.count(OUTPUT_OPEN):
            return None
        plan = TextPlan(calls, pieces)
        return plan if piece_ok(plan.source) else None
