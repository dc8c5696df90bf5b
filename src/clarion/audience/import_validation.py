"""Validation of imported CSV rows: a pure function of (header layout, default region, raw cells).

Nothing here touches the database, the event loop or the app. The row rules are those of
`audience.normalize`; the email fast path is an exact shortcut proved against email-validator in the tests.
"""

from __future__ import annotations

import json
import re
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
_DOT_ATOM_LOCAL = re.compile(r"[a-zA-Z0-9_!#$%&'*+\-/=?^`{|}~]+(?:\.[a-zA-Z0-9_!#$%&'*+\-/=?^`{|}~]+)*\Z")
_LDH_DOMAIN = re.compile(r"[a-zA-Z0-9](?:[a-zA-Z0-9\-]*[a-zA-Z0-9])?(?:\.[a-zA-Z0-9](?:[a-zA-Z0-9\-]*[a-zA-Z0-9])?)+\Z")
_EMAIL_MAX_LEN = 254
_EMPTY_LIST_JSON = "[]"
_EMPTY_OBJECT_JSON = "{}"


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
    """A valid row, normalised. `tags_json`/`attributes_json` are the stored JSON texts of `tags`/`attributes`."""

    line: int
    email: str | None
    phone: str | None
    first_name: str | None
    last_name: str | None
    locale: str | None
    timezone: str | None
    tags: list[str]
    attributes: dict[str, Any]
    tags_json: str
    attributes_json: str


# Valid rows are plain tuples in ImportRow's field order (building a NamedTuple goes through a Python-level
# constructor, several times slower); these are the positions.
(LINE, EMAIL, PHONE, FIRST_NAME, LAST_NAME, LOCALE, TIMEZONE, TAGS, ATTRIBUTES, TAGS_JSON,
 ATTRIBUTES_JSON) = range(len(ImportRow._fields))
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
        if (at and len(text) <= _EMAIL_MAX_LEN and _DOT_ATOM_LOCAL.match(local) and _LDH_DOMAIN.match(domain)):
            lowered = domain.lower()
            verdict = self._domain_ok.get(lowered)
            if verdict is None:
                verdict = self._judge_domain(lowered)
                self._domain_ok[lowered] = verdict
            if verdict:
                return text.lower()
        return normalize.normalize_email(raw)

    @staticmethod
    def _judge_domain(domain: str) -> bool:
        try:
            return normalize.normalize_email("a@" + domain) == "a@" + domain
        except ValueError:
            return False


class RowValidator:
    """Turns the cells of one data row into a valid row (ImportRow's fields as a plain tuple), or a Rejection
    saying what is wrong."""

    def __init__(self, columns: Columns, default_region: str | None) -> None:
        self.columns = columns
        self.default_region = default_region
        self.normalize_email = EmailNormalizer()
        known = columns.known
        # A column the file lacks reads the always-empty cell one past the row's end (see validate).
        missing = columns.width
        self._email = known.get("email", missing)
        self._phone = known.get("phone", missing)
        self._first = known.get("first_name", missing)
        self._last = known.get("last_name", missing)
        self._locale = known.get("locale", missing)
        self._timezone = known.get("timezone", missing)
        self._tags = known.get("tags", missing)
        # Each attribute column as (index, its name already as JSON text), for building the attributes' JSON.
        self._attributes = tuple((index, name, json.dumps(name)) for index, name in columns.attributes)
        # Validation is a pure function of the cell: a marketing list repeats the same few locales, time zones
        # and tag lists on every row, so their verdicts are remembered (bounded, see _remember).
        self._seen_locale: dict[str, tuple[str | None, str | None]] = {}
        self._seen_timezone: dict[str, tuple[str | None, str | None]] = {}
        self._seen_tags: dict[str, tuple[tuple[list[str], str] | None, str | None]] = {}

    def validate(self, line: int, cells: list[str]) -> RowTuple | Rejection:
        width = self.columns.width
        if len(cells) > width:
            # Usually an unquoted comma inside a value: the cells no longer line up with the header.
            return Rejection(line, f"{len(cells)} cells but the header has {width} columns")
        # Pad to the header's width plus the one empty cell that absent columns point at.
        cells = cells + [""] * (width + 1 - len(cells))
        problems: list[str] | None = None

        email = cells[self._email].strip() or None
        phone = cells[self._phone].strip() or None
        if email is not None:
            try:
                email = self.normalize_email(email)
            except ValueError as exc:
                problems = [str(exc)]
        if phone is not None:
            try:
                phone = normalize.normalize_phone(phone, self.default_region)
            except ValueError as exc:
                problems = [*(problems or ()), str(exc)]
        if email is None and phone is None and problems is None:
            problems = ["a contact needs an email or a phone"]
        first_name = cells[self._first].strip() or None
        last_name = cells[self._last].strip() or None
        if first_name is not None and len(first_name) > NAME_MAX_LEN:
            problems = [*(problems or ()), f"first_name is longer than {NAME_MAX_LEN} characters"]
        if last_name is not None and len(last_name) > NAME_MAX_LEN:
            problems = [*(problems or ()), f"last_name is longer than {NAME_MAX_LEN} characters"]
        locale = cells[self._locale].strip() or None
        if locale is not None:
            verdict = self._seen_locale.get(locale)
            if verdict is None:
                verdict = self._remember(self._seen_locale, locale, self._check_locale)
            locale, problem = verdict
            if problem is not None:
                problems = [*(problems or ()), problem]
        timezone = cells[self._timezone].strip() or None
        if timezone is not None:
            verdict = self._seen_timezone.get(timezone)
            if verdict is None:
                verdict = self._remember(self._seen_timezone, timezone, self._check_timezone)
            timezone, problem = verdict
            if problem is not None:
                problems = [*(problems or ()), problem]
        tags: list[str] = []
        tags_json = _EMPTY_LIST_JSON
        raw_tags = cells[self._tags].strip()
        if raw_tags:
            tag_verdict = self._seen_tags.get(raw_tags)
            if tag_verdict is None:
                tag_verdict = self._remember(self._seen_tags, raw_tags, self._check_tags)
            found, problem = tag_verdict
            if problem is not None:
                problems = [*(problems or ()), problem]
            elif found is not None:
                tags = found[0].copy()  # each row gets its own list
                tags_json = found[1]
        attributes: dict[str, Any] = {}
        attributes_json = _EMPTY_OBJECT_JSON
        if self._attributes:
            members = []
            for index, name, name_json in self._attributes:
                value = cells[index].strip()
                if value:
                    value = attributes[name] = attribute_value(value)
                    members.append(f"{name_json}: {_json_scalar(value)}")
            if members:
                attributes_json = "{" + ", ".join(members) + "}"
        if problems is not None:
            return Rejection(line, "; ".join(problems))
        return (line, email, phone, first_name, last_name, locale, timezone, tags, attributes, tags_json,
                attributes_json)

    @staticmethod
    def _remember(cache: dict[str, Any], key: str, check: Any) -> Any:
        if len(cache) >= 4096:
            cache.clear()  # a column of unique values gains nothing from a cache; keep memory flat
        verdict = cache[key] = check(key)
        return verdict

    @staticmethod
    def _check_locale(value: str) -> tuple[str | None, str | None]:
        try:
            locale = normalize.normalize_locale(value)
            if len(locale) > LOCALE_MAX_LEN:
                raise ValueError(f"locale is longer than {LOCALE_MAX_LEN} characters")
        except ValueError as exc:
            return None, str(exc)
        return locale, None

    @staticmethod
    def _check_timezone(value: str) -> tuple[str | None, str | None]:
        try:
            return normalize.normalize_timezone(value), None
        except ValueError as exc:
            return None, str(exc)

    @staticmethod
    def _check_tags(value: str) -> tuple[tuple[list[str], str] | None, str | None]:
        try:
            tags = normalize.normalize_tags(value.split(";"))
        except ValueError as exc:
            return None, str(exc)
        return (tags, json.dumps(tags)), None


# One validator per (layout, region) for the life of the process, so the per-domain email verdicts and the
# remembered locales/time zones/tags carry over from chunk to chunk.
_validators: dict[tuple[Any, ...], RowValidator] = {}


def validate_chunk(columns: Columns, default_region: str | None,
                   records: list[tuple[int, list[str]]]) -> tuple[list[RowTuple], list[Rejection]]:
    """Validate a chunk of (line, cells) records: the valid rows in file order (ImportRow fields as plain
    tuples), and the rejected lines."""
    key = (tuple(sorted(columns.known.items())), columns.attributes, columns.width, default_region)
    validator = _validators.get(key)
    if validator is None:
        if len(_validators) > 16:
            _validators.clear()
        validator = _validators[key] = RowValidator(columns, default_region)
    rows: list[RowTuple] = []
    rejections: list[Rejection] = []
    validate = validator.validate
    for line, cells in records:
        if "\x00" in "".join(cells):
            rejections.append(Rejection(line, "the row contains a NUL character"))
            continue
        outcome = validate(line, cells)
        if type(outcome) is tuple:
            rows.append(outcome)
        else:
            rejections.append(outcome)  # type: ignore[arg-type]
    return rows, rejections
