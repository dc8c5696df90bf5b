"""Validation of imported CSV rows: a pure function of (header layout, default region, raw cells).

Nothing here touches the database, the event loop or the app. The row rules are those of `audience.normalize`;
the email fast path is an exact shortcut proved against email-validator in the tests.

A chunk is validated a column at a time (see ChunkValidator): most of the work then runs in C (str.strip over a
column, one regular expression over a column's joined emails, a dict lookup per distinct locale or tag list, zip
to build the rows), where a row at a time cost a dozen Python-level steps per row. The tests hold the result equal
to the row rules written out plainly.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from json.encoder import encode_basestring_ascii as _encode_json_string
from typing import Any, NamedTuple

from clarion.audience import normalize

KNOWN_COLUMNS = ("email", "phone", "first_name", "last_name", "locale", "timezone", "tags")
NAME_MAX_LEN = 200
LOCALE_MAX_LEN = 35
# Integers beyond 2**53 would lose precision in JSON readers that use doubles; such ids stay strings.
_MAX_EXACT_INT = 2**53
_FLOAT_RE = re.compile(r"-?[0-9]+\.[0-9]+\Z")

# Plain ASCII addresses: an RFC 5322 dot-atom local part and an LDH host name. email-validator accepts such a
# local part unchanged, so for these only the domain needs its verdict, which is cached per domain.
_LOCAL = r"[a-zA-Z0-9_!#$%&'*+\-/=?^`{|}~]+(?:\.[a-zA-Z0-9_!#$%&'*+\-/=?^`{|}~]+)*"
_HOST = r"[a-zA-Z0-9](?:[a-zA-Z0-9\-]*[a-zA-Z0-9])?(?:\.[a-zA-Z0-9](?:[a-zA-Z0-9\-]*[a-zA-Z0-9])?)+"
_DOT_ATOM_LOCAL = re.compile(_LOCAL + r"\Z")
_LDH_DOMAIN = re.compile(_HOST + r"\Z")
# A column of emails joined with NULs (which no validated cell holds), a NUL after each: true when every one is
# empty or `local@host` as above. Atomic groups and a possessive repeat: a column that fails, fails in one pass.
# (Greedy matching of either part reaches the end of any address that matches it whole, so nothing is lost.)
_PLAIN_EMAIL_COLUMN = re.compile(rf"(?:(?:(?>{_LOCAL})@(?>{_HOST}))?\x00)*+\Z")
_DOMAINS_OF_PLAIN_COLUMN = re.compile(r"@([^\x00]*)")
_NUL = "\x00"
_EMAIL_MAX_LEN = 254
# Domain verdicts kept: far more than a list's usual domains; a list of unique domains keeps memory flat.
_DOMAINS_REMEMBERED = 65536
EMPTY_LIST_JSON = "[]"
EMPTY_OBJECT_JSON = "{}"


@dataclass(frozen=True)
class Columns:
    """Where each known field sits in a row, and which columns are attributes."""

    known: dict[str, int]
    attributes: tuple[tuple[int, str], ...]
    width: int


def attribute_value(text: str) -> Any:
    """The JSON value an attribute cell is stored as, so numeric and boolean segment filters work.

    A cell becomes an int or a float only when that number prints back to exactly the same text: "42" → 42,
    "-7" → -7, "3.5" → 3.5; but "0123", "+5", "1.50", "1e5", "1_000" and "nan" stay strings, as do integers
    beyond ±2**53 (ids and card-like numbers, which JSON readers using doubles would corrupt). "true" and "false"
    in any letter case become booleans. Everything else is the trimmed string.
    """
    lowered = text.lower()
    if lowered == "true":
        return True
    if lowered == "false":
        return False
    first = text[0]
    if first.isdigit() or (first == "-" and len(text) > 1):
        if text.lstrip("-").isdigit() and text.isascii():
            number = int(text)
            if str(number) == text and abs(number) < _MAX_EXACT_INT:
                return number
        elif _FLOAT_RE.match(text):
            real = float(text)
            if repr(real) == text:
                return real
    return text


def _json_scalar(value: str | float | bool) -> str:
    """json.dumps of an attribute_value result, character for character, without json.dumps' per-call cost."""
    if value is True:
        return "true"
    if value is False:
        return "false"
    if type(value) is str:
        return _encode_json_string(value)
    return repr(value)  # int, or a float that attribute_value only makes when finite: json.dumps prints repr


class ImportRow(NamedTuple):
    """A valid row, normalised; the stored JSON texts of its tags and attributes. Every field is a value the
    database drivers bind as it is."""

    line: int
    email: str | None
    phone: str | None
    first_name: str | None
    last_name: str | None
    locale: str | None
    timezone: str | None
    tags_json: str
    attributes_json: str


# Valid rows are plain tuples in ImportRow's field order (building a NamedTuple goes through a Python-level
# constructor, several times slower); these are the positions.
LINE, EMAIL, PHONE, FIRST_NAME, LAST_NAME, LOCALE, TIMEZONE, TAGS_JSON, ATTRIBUTES_JSON = range(len(ImportRow._fields))
RowTuple = tuple[Any, ...]


class Rejection(NamedTuple):
    line: int
    reason: str


class EmailNormalizer:
    """normalize_email with an exact fast path for plain ASCII addresses.

    For `local@domain` where the local part is an ASCII dot-atom and the domain an ASCII host name,
    email-validator keeps the local part as is and judges the domain on its own; the overall length limit is
    254 characters. So the result is `(local + "@" + domain).lower()` whenever email-validator accepted that
    domain unchanged (apart from case), which is asked once per domain. Anything else takes the full validator.
    """

    def __init__(self) -> None:
        self._domain_ok: dict[str, bool] = {}

    def __call__(self, raw: str) -> str:
        text = raw.strip()
        local, at, domain = text.partition("@")
        if (at and len(text) <= _EMAIL_MAX_LEN and _DOT_ATOM_LOCAL.match(local) and _LDH_DOMAIN.match(domain)
                and self.domain_is_plain(domain.lower())):
            return text.lower()
        return normalize.normalize_email(raw)

    def column(self, values: list[str], problems: dict[int, list[str]]) -> list[str | None]:
        """A column of stripped cells as emails (None where empty); an invalid one adds its reason to problems."""
        joined = _NUL.join(values)
        if _PLAIN_EMAIL_COLUMN.match(joined + _NUL) and max(map(len, values)) <= _EMAIL_MAX_LEN:
            lowered = joined.lower()
            if all(map(self.domain_is_plain, set(_DOMAINS_OF_PLAIN_COLUMN.findall(lowered)))):
                return [email or None for email in lowered.split(_NUL)]
        emails: list[str | None] = []
        for position, value in enumerate(values):
            email = None
            if value:
                try:
                    email = self(value)
                except ValueError as exc:
                    problems.setdefault(position, []).append(str(exc))
            emails.append(email)
        return emails

    def domain_is_plain(self, domain: str) -> bool:
        """Whether email-validator accepts this lower-case domain as it is (asked once per domain)."""
        verdict = self._domain_ok.get(domain)
        if verdict is None:
            try:
                verdict = normalize.normalize_email("a@" + domain) == "a@" + domain
            except ValueError:
                verdict = False
            if len(self._domain_ok) >= _DOMAINS_REMEMBERED:
                self._domain_ok.clear()
            self._domain_ok[domain] = verdict
        return verdict


def _check_locale(value: str) -> tuple[str | None, str | None]:
    try:
        locale = normalize.normalize_locale(value)
        if len(locale) > LOCALE_MAX_LEN:
            raise ValueError(f"locale is longer than {LOCALE_MAX_LEN} characters")
    except ValueError as exc:
        return None, str(exc)
    return locale, None


def _check_timezone(value: str) -> tuple[str | None, str | None]:
    try:
        return normalize.normalize_timezone(value), None
    except ValueError as exc:
        return None, str(exc)


def _check_tags(value: str) -> tuple[str | None, str | None]:
    """The stored JSON text of a tags cell (tags separated by ';')."""
    try:
        return json.dumps(normalize.normalize_tags(value.split(";"))), None
    except ValueError as exc:
        return None, str(exc)


_Verdict = tuple[str | None, str | None]  # (the stored value, or the reason it is rejected)
# Distinct cells remembered per column: memory stays flat.
_REMEMBERED = 4096


class ChunkValidator:
    """Turns a chunk of rows (their cells, and the lines they start on) into valid rows (ImportRow's fields as
    plain tuples) and Rejections saying what is wrong, a column at a time."""

    def __init__(self, columns: Columns, default_region: str | None) -> None:
        self.columns = columns
        self.default_region = default_region
        self.emails = EmailNormalizer()
        known = columns.known
        self._email = known.get("email")
        self._phone = known.get("phone")
        self._first = known.get("first_name")
        self._last = known.get("last_name")
        self._locale = known.get("locale")
        self._timezone = known.get("timezone")
        self._tags = known.get("tags")
        # Each attribute column as (index, the start of its JSON member: its name as JSON text and ": ").
        self._attributes = tuple((index, json.dumps(name) + ": ") for index, name in columns.attributes)
        # A marketing list repeats the same few locales, time zones and tag lists on every row: each distinct
        # cell is judged once (bounded, see _remembered).
        self._seen_locale: dict[str, _Verdict] = {}
        self._seen_timezone: dict[str, _Verdict] = {}
        self._seen_tags: dict[str, _Verdict] = {}
        # Per attribute column: cell → its JSON member (None for an empty cell).
        self._seen_members: tuple[dict[str, str | None], ...] = tuple({} for _ in self._attributes)

    def validate(self, lines: Sequence[int], cells: Sequence[list[str]]
                 ) -> tuple[list[RowTuple], list[Rejection]]:
        """The valid rows in file order, and the rejected lines in file order, of the rows `cells` starting on
        `lines`."""
        lines, cells, rejections = self._regular(lines, cells)
        if not lines:
            return [], rejections
        table = list(zip(*cells, strict=True))
        empty = ("",) * len(lines)

        def column(index: int | None) -> list[str]:
            return list(map(str.strip, table[index] if index is not None else empty))

        # Each row's problems, in the order the rules are listed (the reason joins them in that order).
        problems: dict[int, list[str]] = {}
        emails = self.emails.column(column(self._email), problems)
        phones = self._phones(column(self._phone), problems)
        if None in emails:
            for position, (email, phone) in enumerate(zip(emails, phones, strict=True)):
                if email is None and phone is None and position not in problems:
                    problems[position] = ["a contact needs an email or a phone"]
        first_names = self._names(column(self._first), "first_name", problems)
        last_names = self._names(column(self._last), "last_name", problems)
        locales = self._judged(column(self._locale), self._seen_locale, _check_locale, None, problems)
        timezones = self._judged(column(self._timezone), self._seen_timezone, _check_timezone, None, problems)
        tags = self._judged(column(self._tags), self._seen_tags, _check_tags, EMPTY_LIST_JSON, problems)
        attributes = self._attributes_json(table, len(lines))
        rows = list(zip(lines, emails, phones, first_names, last_names, locales, timezones, tags, attributes,
                        strict=True))
        if problems:
            rejected = [Rejection(lines[position], "; ".join(reasons))
                        for position, reasons in sorted(problems.items())]
            rejections = sorted(rejections + rejected) if rejections else rejected
            rows = [row for position, row in enumerate(rows) if position not in problems]
        return rows, rejections

    def _regular(self, lines: Sequence[int], cells: Sequence[list[str]]
                 ) -> tuple[Sequence[int], Sequence[list[str]], list[Rejection]]:
        """The rows whose cells can be validated, each as wide as the header (short rows padded with empty
        cells), and the rejections of the rest: a NUL anywhere in the row, more cells than the header."""
        width = self.columns.width
        if set(map(len, cells)) <= {width} and _NUL not in "".join(map("".join, cells)):
            return lines, cells, []
        kept_lines: list[int] = []
        kept_cells: list[list[str]] = []
        rejections: list[Rejection] = []
        for line, row in zip(lines, cells, strict=True):
            if _NUL in "".join(row):
                rejections.append(Rejection(line, "the row contains a NUL character"))
            elif len(row) > width:
                # Usually an unquoted comma inside a value: the cells no longer line up with the header.
                rejections.append(Rejection(line, f"{len(row)} cells but the header has {width} columns"))
            else:
                kept_lines.append(line)
                kept_cells.append(row + [""] * (width - len(row)))
        return kept_lines, kept_cells, rejections

    def _phones(self, values: list[str], problems: dict[int, list[str]]) -> list[str | None]:
        phones: list[str | None] = []
        region = self.default_region
        for position, value in enumerate(values):
            phone = None
            if value:
                try:
                    phone = normalize.normalize_phone(value, region)
                except ValueError as exc:
                    problems.setdefault(position, []).append(str(exc))
            phones.append(phone)
        return phones

    @staticmethod
    def _names(values: list[str], label: str, problems: dict[int, list[str]]) -> list[str | None]:
        if max(map(len, values)) > NAME_MAX_LEN:
            for position, value in enumerate(values):
                if len(value) > NAME_MAX_LEN:
                    problems.setdefault(position, []).append(f"{label} is longer than {NAME_MAX_LEN} characters")
        return [value or None for value in values]

    @staticmethod
    def _judged(values: list[str], seen: dict[str, _Verdict], check: Callable[[str], _Verdict],
                if_empty: str | None, problems: dict[int, list[str]]) -> list[str | None]:
        """A column whose cells are judged on their own (locale, time zone, tags): once per distinct cell."""
        distinct = set(values)
        verdicts = _remembered(seen, distinct, lambda value: check(value) if value else (if_empty, None))
        stored = {value: verdicts[value][0] for value in distinct}
        rejected = {value: verdicts[value][1] for value in distinct if verdicts[value][1] is not None}
        if rejected:
            for position, value in enumerate(values):
                if value in rejected:
                    problems.setdefault(position, []).append(rejected[value])
        return list(map(stored.__getitem__, values))

    def _attributes_json(self, table: list[tuple[str, ...]], count: int) -> list[str]:
        """Each row's attributes as the JSON object text stored: its non-empty attribute cells, in column order."""
        members: list[list[str | None]] = []
        for (index, start), seen in zip(self._attributes, self._seen_members, strict=True):
            values = list(map(str.strip, table[index]))
            member = _remembered(seen, set(values),
                                 lambda value, start=start: start + _json_scalar(attribute_value(value)) if value else None)
            members.append(list(map(member.__getitem__, values)))
        if not members:
            return [EMPTY_OBJECT_JSON] * count
        if not any(None in column for column in members):
            return list(map(("{{" + ", ".join(["{}"] * len(members)) + "}}").format, *members))
        return ["{" + ", ".join(filter(None, row)) + "}" for row in zip(*members, strict=True)]


def _remembered(seen: dict[str, Any], distinct: set[str], judge: Callable[[str], Any]) -> dict[str, Any]:
    """`seen`, holding the judgement of every value in `distinct`: `judge` is called for the ones not seen yet.
    Emptied first when it would outgrow _REMEMBERED (a column of unique values gains nothing from more)."""
    missing = distinct.difference(seen)
    if missing and len(seen) + len(missing) > _REMEMBERED:
        seen.clear()
        missing = distinct
    for value in missing:
        seen[value] = judge(value)
    return seen


# One validator per (layout, region) for the life of the process, so the per-domain email verdicts and the
# remembered locales/time zones/tags carry over from chunk to chunk.
_validators: dict[tuple[Any, ...], ChunkValidator] = {}


def validate_chunk(columns: Columns, default_region: str | None, lines: Sequence[int],
                   cells: Sequence[list[str]]) -> tuple[list[RowTuple], list[Rejection]]:
    """Validate a chunk: the rows `cells` that start on `lines`. The valid rows in file order (ImportRow fields as
    plain tuples), and the rejected lines in file order."""
    key = (tuple(sorted(columns.known.items())), columns.attributes, columns.width, default_region)
    validator = _validators.get(key)
    if validator is None:
        if len(_validators) > 16:
            _validators.clear()
        validator = _validators[key] = ChunkValidator(columns, default_region)
    return validator.validate(lines, cells)
