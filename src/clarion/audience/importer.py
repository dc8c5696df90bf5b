"""Contact import from CSV: reading, per-row validation, upsert planning and the chunk loop.

The file is never held in memory: it is read incrementally through a text wrapper and handled in chunks of
`chunk_rows` rows. Per chunk, rows are validated in Python, matched against one lookup of the contacts that own
the chunk's emails and phones, and written with set-based statements (see import_repository).

Rules a CSV follows:

* Columns `email, phone, first_name, last_name, locale, timezone, tags` (tags separated by `;`); header names
  are case-insensitive and trimmed. Every other named column becomes an attribute under its trimmed header;
  a column with an empty header is ignored. A file needs an `email` or a `phone` column.
* UTF-8, with or without a byte-order mark.
* Empty cells are not stored. A row updates the contact that owns its email, else the one that owns its phone,
  else it creates a contact. An update overwrites the non-empty fields given, merges attributes and adds tags.
* A row whose email and phone belong to two different contacts (in the database or from earlier lines of the
  file) is rejected with its reason; so is any row that fails validation. Good rows are imported regardless.
"""

from __future__ import annotations

import asyncio
import codecs
import csv
import io
import re
import uuid
from collections.abc import Awaitable, Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, BinaryIO

from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from clarion.audience import normalize
from clarion.audience.import_repository import ContactImportRepo, ExistingContact
from clarion.audience.schemas import ImportResult
from clarion.errors import Conflict, Invalid, field_error
from clarion.kit.clock import utcnow
from clarion.kit.ids import new_id

KNOWN_COLUMNS = ("email", "phone", "first_name", "last_name", "locale", "timezone", "tags")
NAME_MAX_LEN = 200
LOCALE_MAX_LEN = 35
IMPORT_SOURCE = "import"
_SCAN_BLOCK = 1 << 20
# Integers beyond 2**53 would lose precision in JSON readers that use doubles; such ids stay strings.
_MAX_EXACT_INT = 2**53
_FLOAT_RE = re.compile(r"-?[0-9]+\.[0-9]+\Z")

# Plain ASCII addresses: an RFC 5322 dot-atom local part and an LDH host name. email-validator accepts such a
# local part unchanged, so for these only the domain needs its verdict, which is cached per domain.
_DOT_ATOM_LOCAL = re.compile(r"[a-zA-Z0-9_!#$%&'*+\-/=?^`{|}~]+(?:\.[a-zA-Z0-9_!#$%&'*+\-/=?^`{|}~]+)*\Z")
_LDH_DOMAIN = re.compile(r"[a-zA-Z0-9](?:[a-zA-Z0-9\-]*[a-zA-Z0-9])?(?:\.[a-zA-Z0-9](?:[a-zA-Z0-9\-]*[a-zA-Z0-9])?)+\Z")
_EMAIL_MAX_LEN = 254


# --- reading -----------------------------------------------------------------------------------------------

def check_utf8_text(binary: BinaryIO) -> None:
    """Reject a file that is not UTF-8 text before anything is written, then rewind it.

    One streaming pass (a block at a time): an import never fails half-way on an undecodable byte.
    """
    decoder = codecs.getincrementaldecoder("utf-8")()
    line = 1
    while block := binary.read(_SCAN_BLOCK):
        if b"\x00" in block:
            line += block[:block.index(b"\x00")].count(b"\n")
            raise Invalid(f"the file is not CSV text: it contains a NUL byte (line {line})",
                          errors=[field_error(["body", "file"], f"binary content at line {line}")])
        try:
            decoder.decode(block)
        except UnicodeDecodeError as exc:
            line += block[:exc.start].count(b"\n")
            raise Invalid(f"the file is not UTF-8 text (undecodable byte at line {line})",
                          errors=[field_error(["body", "file"], f"not UTF-8 at line {line}")]) from exc
        line += block.count(b"\n")
    try:
        decoder.decode(b"", final=True)
    except UnicodeDecodeError as exc:
        raise Invalid("the file is not UTF-8 text (it ends inside a multi-byte character)",
                      errors=[field_error(["body", "file"], "truncated UTF-8 at the end")]) from exc
    binary.seek(0)


@dataclass(frozen=True)
class Columns:
    """Where each known field sits in a row, and which columns are attributes."""

    known: dict[str, int]
    attributes: tuple[tuple[int, str], ...]
    width: int


def parse_header(cells: list[str]) -> Columns:
    known: dict[str, int] = {}
    attributes: list[tuple[int, str]] = []
    seen: dict[str, int] = {}
    for index, raw in enumerate(cells):
        name = raw.strip()
        if not name:
            continue
        key = name.lower()
        if key in seen:
            raise Invalid(f"the header names column {name!r} twice (columns {seen[key] + 1} and {index + 1})",
                          errors=[field_error(["body", "file", "header"], f"duplicate column {name!r}")])
        seen[key] = index
        if key in KNOWN_COLUMNS:
            known[key] = index
        else:
            attributes.append((index, name))
    if "email" not in known and "phone" not in known:
        raise Invalid("the CSV header needs an email or a phone column",
                      errors=[field_error(["body", "file", "header"], "email or phone column required", "missing")])
    return Columns(known=known, attributes=tuple(attributes), width=len(cells))


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


# --- validation --------------------------------------------------------------------------------------------

@dataclass(slots=True)
class ImportRow:
    line: int
    email: str | None
    phone: str | None
    first_name: str | None
    last_name: str | None
    locale: str | None
    timezone: str | None
    tags: list[str]
    attributes: dict[str, Any]


@dataclass(slots=True)
class Rejection:
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
    """Turns the cells of one data row into an ImportRow, or a Rejection saying what is wrong."""

    def __init__(self, columns: Columns, default_region: str | None) -> None:
        self.columns = columns
        self.default_region = default_region
        self.normalize_email = EmailNormalizer()
        known = columns.known
        self._email = known.get("email")
        self._phone = known.get("phone")
        self._first = known.get("first_name")
        self._last = known.get("last_name")
        self._locale = known.get("locale")
        self._timezone = known.get("timezone")
        self._tags = known.get("tags")

    def validate(self, line: int, cells: list[str]) -> ImportRow | Rejection:
        if len(cells) > self.columns.width:
            # Usually an unquoted comma inside a value: the cells no longer line up with the header.
            return Rejection(line, f"{len(cells)} cells but the header has {self.columns.width} columns")
        if len(cells) < self.columns.width:
            cells = cells + [""] * (self.columns.width - len(cells))
        problems: list[str] = []

        def cell(index: int | None) -> str | None:
            if index is None:
                return None
            value = cells[index].strip()
            return value or None

        email = cell(self._email)
        phone = cell(self._phone)
        if email is not None:
            try:
                email = self.normalize_email(email)
            except ValueError as exc:
                problems.append(str(exc))
        if phone is not None:
            try:
                phone = normalize.normalize_phone(phone, self.default_region)
            except ValueError as exc:
                problems.append(str(exc))
        if email is None and phone is None and not problems:
            problems.append("a contact needs an email or a phone")
        first_name, last_name = cell(self._first), cell(self._last)
        for label, value in (("first_name", first_name), ("last_name", last_name)):
            if value is not None and len(value) > NAME_MAX_LEN:
                problems.append(f"{label} is longer than {NAME_MAX_LEN} characters")
        locale = cell(self._locale)
        if locale is not None:
            try:
                locale = normalize.normalize_locale(locale)
                if len(locale) > LOCALE_MAX_LEN:
                    raise ValueError(f"locale is longer than {LOCALE_MAX_LEN} characters")
            except ValueError as exc:
                problems.append(str(exc))
        timezone = cell(self._timezone)
        if timezone is not None:
            try:
                timezone = normalize.normalize_timezone(timezone)
            except ValueError as exc:
                problems.append(str(exc))
        tags: list[str] = []
        raw_tags = cell(self._tags)
        if raw_tags is not None:
            try:
                tags = normalize.normalize_tags(raw_tags.split(";"))
            except ValueError as exc:
                problems.append(str(exc))
        attributes: dict[str, Any] = {}
        for index, name in self.columns.attributes:
            value = cells[index].strip()
            if value:
                attributes[name] = attribute_value(value)
        if problems:
            return Rejection(line, "; ".join(problems))
        return ImportRow(line, email, phone, first_name, last_name, locale, timezone, tags, attributes)


def read_rows(text: io.TextIOBase, validator_factory: Callable[[Columns], RowValidator],
              chunk_rows: int) -> Iterator[tuple[list[ImportRow], list[Rejection]]]:
    """Yield (valid rows, rejections) per chunk of at most `chunk_rows` data rows.

    A row's line is the physical line it starts on (the header is line 1); quoted values may span lines.
    """
    reader = csv.reader(text)
    try:
        header = next(reader)
    except StopIteration:
        raise Invalid("the file is empty: a CSV header with an email or phone column is expected",
                      errors=[field_error(["body", "file"], "empty file", "missing")]) from None
    except csv.Error as exc:
        raise Invalid(f"the CSV header cannot be read: {exc}",
                      errors=[field_error(["body", "file", "header"], str(exc))]) from exc
    validator = validator_factory(parse_header(header))
    rows: list[ImportRow] = []
    rejections: list[Rejection] = []
    counted = 0
    next_line = reader.line_num + 1
    while True:
        line = next_line
        try:
            cells = next(reader)
        except StopIteration:
            break
        except csv.Error as exc:
            rejections.append(Rejection(line, f"malformed CSV: {exc}"))
            cells = None
        next_line = reader.line_num + 1
        if cells is not None:
            if not cells or (len(cells) == 1 and not cells[0].strip()):
                continue  # blank line
            if any("\x00" in value for value in cells):
                rejections.append(Rejection(line, "the row contains a NUL character"))
            else:
                outcome = validator.validate(line, cells)
                (rows if isinstance(outcome, ImportRow) else rejections).append(outcome)  # type: ignore[arg-type]
        counted += 1
        if counted >= chunk_rows:
            yield rows, rejections
            rows, rejections, counted = [], [], 0
    if counted:
        yield rows, rejections


# --- upsert planning ---------------------------------------------------------------------------------------

@dataclass(slots=True)
class PlannedContact:
    """A contact as it will be after this chunk: a new one to insert or an existing one to update."""

    id: uuid.UUID
    email: str | None
    phone: str | None
    first_name: str | None
    last_name: str | None
    locale: str | None
    timezone: str | None
    attributes: dict[str, Any]
    tags: list[str]
    is_new: bool
    channels: tuple[str, ...] = ()
    changed: bool = False
    email_changed: bool = False
    phone_changed: bool = False


@dataclass
class ChunkPlan:
    inserts: list[PlannedContact] = field(default_factory=list)
    updates: list[PlannedContact] = field(default_factory=list)
    created: int = 0
    updated: int = 0
    rejections: list[Rejection] = field(default_factory=list)


def _apply_row(target: PlannedContact, row: ImportRow) -> None:
    for name in ("first_name", "last_name", "locale", "timezone"):
        value = getattr(row, name)
        if value is not None:
            setattr(target, name, value)
    if row.email is not None and row.email != target.email:
        target.email, target.email_changed = row.email, True
    if row.phone is not None and row.phone != target.phone:
        target.phone, target.phone_changed = row.phone, True
    if row.attributes:
        target.attributes = {**target.attributes, **row.attributes}
    for tag in row.tags:
        if tag not in target.tags:
            target.tags = [*target.tags, tag]
    target.changed = True


def plan_chunk(rows: list[ImportRow], existing: list[ExistingContact],
               channels_of_address: Mapping[str, tuple[str, ...]]) -> ChunkPlan:
    """Match each row, in file order, to the contact owning its email, else its phone, else a new contact.

    Rows of the chunk see the effect of earlier rows, exactly as later chunks see the database: the result does
    not depend on where chunk boundaries fall. A new contact is subscribed to the channels of the addresses
    of the row that created it (`channels_of_address`); existing subscriptions are never changed.
    """
    plan = ChunkPlan()
    by_email: dict[str, PlannedContact] = {}
    by_phone: dict[str, PlannedContact] = {}
    updated_ids: set[uuid.UUID] = set()
    for found in existing:
        contact = PlannedContact(found.id, found.email, found.phone, found.first_name, found.last_name,
                                 found.locale, found.timezone, dict(found.attributes or {}), list(found.tags or []),
                                 is_new=False)
        if contact.email:
            by_email[contact.email] = contact
        if contact.phone:
            by_phone[contact.phone] = contact
    for row in rows:
        owner_of_email = by_email.get(row.email) if row.email else None
        owner_of_phone = by_phone.get(row.phone) if row.phone else None
        if owner_of_email is not None and owner_of_phone is not None and owner_of_email is not owner_of_phone:
            plan.rejections.append(Rejection(
                row.line, f"email {row.email} and phone {row.phone} belong to two different contacts"))
            continue
        target = owner_of_email or owner_of_phone
        if target is None:
            channels = tuple(channel for address, chans in channels_of_address.items()
                             if getattr(row, address) for channel in chans)
            target = PlannedContact(new_id(), row.email, row.phone, row.first_name, row.last_name, row.locale,
                                    row.timezone, dict(row.attributes), list(row.tags), is_new=True,
                                    channels=channels)
            plan.inserts.append(target)
            plan.created += 1
        else:
            old_email, old_phone = target.email, target.phone
            _apply_row(target, row)
            if target.email != old_email and old_email is not None:
                by_email.pop(old_email, None)
            if target.phone != old_phone and old_phone is not None:
                by_phone.pop(old_phone, None)
            if not target.is_new and target.id not in updated_ids:
                updated_ids.add(target.id)
                plan.updates.append(target)
            plan.updated += 1
        if target.email:
            by_email[target.email] = target
        if target.phone:
            by_phone[target.phone] = target
    return plan


# --- the chunk loop ----------------------------------------------------------------------------------------

async def import_csv(
    session: AsyncSession,
    tenant_id: uuid.UUID,
    binary: BinaryIO,
    *,
    default_region: str | None,
    chunk_rows: int,
    channels_of_address: Mapping[str, tuple[str, ...]],
    after_chunk: Callable[[], Awaitable[None]] | None = None,
    on_progress: Callable[[int], None] | None = None,
) -> ImportResult:
    """Import a CSV (a seekable binary stream) into the tenant's contacts; flushes, never commits.

    `after_chunk` runs once each chunk is written (the CLI commits there); `on_progress` gets the bytes read.
    """
    if chunk_rows < 1:
        raise ValueError("chunk_rows must be at least 1")
    await asyncio.to_thread(check_utf8_text, binary)
    repo = ContactImportRepo(session, tenant_id)
    text = io.TextIOWrapper(binary, encoding="utf-8-sig", newline="")
    created = updated = 0
    rejected: list[dict[str, Any]] = []
    try:
        chunks = read_rows(text, lambda columns: RowValidator(columns, default_region), chunk_rows)
        while True:
            # Parsing and validation are CPU work: off the event loop so other requests keep being served.
            chunk = await asyncio.to_thread(next, chunks, None)
            if chunk is None:
                break
            rows, rejections = chunk
            existing = await repo.find_owners(sorted({r.email for r in rows if r.email}),
                                              sorted({r.phone for r in rows if r.phone}))
            plan = plan_chunk(rows, existing, channels_of_address)
            try:
                await repo.write(plan.inserts, plan.updates, now=utcnow(), source=IMPORT_SOURCE)
            except IntegrityError as exc:
                raise Conflict("contacts changed while the import ran (another writer took one of its emails or "
                               "phones); nothing of this chunk was written, run the import again") from exc
            created += plan.created
            updated += plan.updated
            rejected.extend({"line": r.line, "reason": r.reason}
                            for r in sorted(rejections + plan.rejections, key=lambda r: r.line))
            if after_chunk is not None:
                await after_chunk()
            if on_progress is not None:
                on_progress(binary.tell())
    finally:
        text.detach()  # the caller owns the binary stream; closing the wrapper must not close it
    return ImportResult(created=created, updated=updated, rejected=rejected)
