"""The plain-text part of an HTML email: html_to_text, and a faster way to the same text for a template that is
rendered for many contacts.

html_to_text parses each rendered message, and most of that work is the same for every contact of a campaign:
only the template's `{{ … }}` outputs differ. A TextPlan parses the *template* once and keeps the calls the
text extractor receives, with the outputs left in the text and quoted attribute values they sit in; per message
only those pieces are rendered, and the text is put together from a compiled form of the calls (the calls are
replayed for a message whose values would change what they decide). The text is exactly html_to_text's:

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
_HIDDEN_HREF = ("#", "javascript:")  # links whose URL the text does not show


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
        line = text if self.pre_depth else _collapsed(text)
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
            label = _collapsed("".join(self.current)[start:])
            if href and not href.startswith(_HIDDEN_HREF):
                self.current.append(_shown_url(label, href) if label else href)
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


def _collapsed(text: str) -> str:
    """Runs of whitespace as one space, none at the ends: how a line (outside <pre>) and a link label read."""
    return " ".join(text.split())


def _shown_url(label: str, href: str) -> str:
    """What follows a link's label: its URL in brackets, unless the label already says it."""
    return "" if label in (href, href.removeprefix("mailto:")) else f" ({href})"


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
# Text the parser gave back unparsed because it starts what could have been markup ("<a href='…" left open).
_UNFINISHED_MARKUP = re.compile(r"<[A-Za-z/!?]")


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
        self._compiled = _compile(self._calls, len(self._pieces))

    @property
    def compiled(self) -> bool:
        """Whether most messages' text comes from the compiled form, without replaying the calls."""
        return self._compiled is not None

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
        if self._compiled is not None and (text := self._compiled.text(values)) is not None:
            return text
        return self._replay(values)

    def _replay(self, values: list[str]) -> str:
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


# --- the compiled plan ----------------------------------------------------------------------------------------
# Replaying the calls costs a method call per tag and text of the template, for every message. Most of what
# they decide is the same whatever the values: which lines there are, which are blank, which links get a
# " (url)". _Compiler replays them once with each piece's value as a placeholder (a private-use character, one
# per piece), and keeps as slots only what a value can change:
# - a line holding values: its text, joined from static text and values and collapsed (unless in <pre>) per
#   message; a line that comes out empty would have been dropped, so that message is replayed instead;
# - a link whose label or URL holds values: " (url)" or nothing, by the extractor's own comparison, per message
#   (an empty label would have shown the URL instead: replayed);
# - a URL that is a value: the link is shown only for a value that is not empty and not "#…"/"javascript:…";
#   any other value is replayed.
# A link whose label starts on one line and ends on another, with values on either, is beyond it: no compiled
# plan. Joining the lines and the final strip happen per message, exactly as the extractor does them.

_SLOT_BASE = 0xE000
_SLOT_COUNT = 0xF900 - _SLOT_BASE
_SLOT_CHARACTER = re.compile("[\ue000-\uf8ff]")
Recipe = tuple[str | int, ...]  # static text and slot numbers, joined per message


def _recipe(text: str) -> Recipe:
    parts: list[str | int] = []
    at = 0
    for match in _SLOT_CHARACTER.finditer(text):
        if match.start() > at:
            parts.append(text[at:match.start()])
        parts.append(ord(match.group()) - _SLOT_BASE)
        at = match.end()
    if at < len(text):
        parts.append(text[at:])
    return tuple(parts)


@dataclass(frozen=True, slots=True)
class _LineSlot:
    recipe: Recipe
    pre: bool


@dataclass(frozen=True, slots=True)
class _LinkSlot:
    label: Recipe
    href: str | int  # static, or the slot of the value it is


class _CompiledText:
    """A plan's text as slots over its values (see above); text() is None for a message it cannot vouch for."""

    def __init__(self, slots: list[_LineSlot | _LinkSlot], lines: Recipe, href_slots: list[int]) -> None:
        self._slots = slots
        self._lines = lines
        self._href_slots = href_slots

    def text(self, values: list[str]) -> str | None:
        for i in self._href_slots:
            href = values[i]
            if not href or href.startswith(_HIDDEN_HREF):
                return None
        resolved: list[str] = list(values)
        for slot in self._slots:
            if type(slot) is _LineSlot:
                text = _join(slot.recipe, resolved)
                line = text if slot.pre else _collapsed(text)
                if not line:
                    return None
                resolved.append(line)
                continue
            label = _collapsed(_join(slot.label, resolved))  # type: ignore[union-attr]
            if not label:
                return None
            href = resolved[slot.href] if type(slot.href) is int else slot.href  # type: ignore[union-attr]
            resolved.append(_shown_url(label, href))
        if not self._lines:
            return ""
        return _join(self._lines, resolved, "\n").strip() + "\n"


def _join(recipe: Recipe, resolved: list[str], separator: str = "") -> str:
    return separator.join([resolved[part] if type(part) is int else part for part in recipe])  # type: ignore[misc]


class _Compiler(_TextExtractor):
    """_TextExtractor over placeholders, noting the slots and checks of a _CompiledText (see above)."""

    def __init__(self, values: int) -> None:
        super().__init__()
        self.values = values
        self.slots: list[_LineSlot | _LinkSlot] = []
        self.href_slots: set[int] = set()
        self.line_number = 0
        self.link_starts: list[tuple[int, bool]] = []  # per open link: its line, and values before it there
        self.broken = False

    def _slot(self, slot: _LineSlot | _LinkSlot) -> str:
        self.slots.append(slot)
        number = self.values + len(self.slots) - 1
        if number >= _SLOT_COUNT:
            self.broken = True
            return "x"
        return chr(_SLOT_BASE + number)

    def _end_line(self, *, blank: bool = False) -> None:
        text = "".join(self.current)
        count = len(self.lines)
        super()._end_line(blank=blank)
        self.line_number += 1
        if len(self.lines) > count and _SLOT_CHARACTER.search(self.lines[-1]):
            self.lines[-1] = self._slot(_LineSlot(_recipe(text), bool(self.pre_depth)))

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "a":
            self.link_starts.append((self.line_number, bool(_SLOT_CHARACTER.search("".join(self.current)))))
        super().handle_starttag(tag, attrs)

    def handle_endtag(self, tag: str) -> None:
        if tag != "a" or not self.links:
            super().handle_endtag(tag)
            return
        line, values_before = self.link_starts.pop()
        href, start = self.links[-1]
        current = "".join(self.current)
        dynamic_href = href is not None and _SLOT_CHARACTER.search(href) is not None
        if line != self.line_number and (values_before or _SLOT_CHARACTER.search(current)):
            self.broken = True  # the label's start is an offset into another line: not followed here
        label_text = current[start:]
        label = _collapsed(label_text)
        if dynamic_href:
            if len(href) != 1:  # type: ignore[arg-type]
                self.broken = True  # an attribute holding values is a single piece, so this cannot happen
                super().handle_endtag(tag)
                return
            self.href_slots.add(ord(href) - _SLOT_BASE)  # type: ignore[arg-type]
        if label and (dynamic_href or _SLOT_CHARACTER.search(label)) and href and \
                not href.startswith(_HIDDEN_HREF):
            self.links.pop()
            slot_href: str | int = ord(href) - _SLOT_BASE if dynamic_href else href
            self.current.append(self._slot(_LinkSlot(_recipe(label_text), slot_href)))
            return
        super().handle_endtag(tag)


def _compile(calls: list[tuple[str, str, Any, bool]], values: int) -> _CompiledText | None:
    """The compiled form of a plan's calls over `values` pieces, or None when a call is beyond it."""
    if values >= _SLOT_COUNT:
        return None
    out = _Compiler(values)
    placeholders = [chr(_SLOT_BASE + i) for i in range(values)]
    for handler, tag, payload, dynamic in calls:
        if handler == "endtag":
            out.handle_endtag(tag)
            continue
        if handler == "data":
            static = () if dynamic else (payload,)
        else:
            static = tuple(value for _, value, *index in payload if not index or index[0] < 0)
        # The template's own text may hold a placeholder character (an entity can spell one): not compiled.
        if any(text is not None and _SLOT_CHARACTER.search(text) for text in static):
            return None
        if handler == "data":
            out.handle_data(placeholders[payload] if dynamic else payload)
        else:
            attrs = [(name, placeholders[i] if i >= 0 else value) for name, value, i in payload] if dynamic \
                else payload
            (out.handle_starttag if handler == "starttag" else out.handle_startendtag)(tag, attrs)
    out._end_line()  # as text() does
    if out.broken:
        return None
    lines = tuple(ord(line) - _SLOT_BASE if _SLOT_CHARACTER.fullmatch(line) else line for line in out.lines)
    return _CompiledText(out.slots, lines, sorted(out.href_slots))


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
                if _UNFINISHED_MARKUP.match(raw) and not in_cdata:
                    # A tag or declaration the parser could not finish, passed on as text at the end: a value
                    # rendered inside it (a quote, a ">") could finish it, and the message would parse otherwise.
                    return None
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
