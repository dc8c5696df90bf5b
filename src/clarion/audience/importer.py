"""Contact import from CSV: reading, upsert planning and the chunk loop (row validation: import_validation).

The file is never held in memory: it is read incrementally through a text wrapper and handled in chunks of
`chunk_rows` rows. Per chunk, rows are validated (a pure function, see import_validation), matched against the
contacts that own the chunk's emails and phones, and written with set-based statements (see import_repository).
Until a chunk meets a contact that exists, the match needs no lookup (see import_csv).

Reading and validating run on the event loop in slices of a few hundred rows, yielding between slices. Chunk N
is written (mostly the database's work: the server's on PostgreSQL, one statement without the GIL on SQLite) while
chunk N+1 is read and validated. Validation runs in this process: a worker process that validated while this one
wrote was measured on a 2-CPU host (2026-12-07, bench/import_contacts.py, 200,000 rows): it added 5–6 µs of CPU a
row (chunks pickled both ways) and gained no wall time on either database, the database already using the second
CPU.

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
import json
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from itertools import islice
from operator import itemgetter
from typing import Any, BinaryIO

from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from clarion.audience.consent import default_bits_of
from clarion.audience.import_repository import ContactImportRepo, ExistingContact, NewRow, PlannedContact
from clarion.audience.import_validation import (
    ATTRIBUTES_JSON,
    EMAIL,
    EMPTY_LIST_JSON,
    EMPTY_OBJECT_JSON,
    FIRST_NAME,
    KNOWN_COLUMNS,
    LAST_NAME,
    LINE,
    LOCALE,
    PHONE,
    TAGS_JSON,
    TIMEZONE,
    Columns,
    EmailNormalizer,
    ImportRow,
    Rejection,
    RowTuple,
    attribute_value,
    validate_chunk,
)
from clarion.audience.schemas import ImportResult
from clarion.errors import Conflict, Invalid, field_error
from clarion.kit.clock import utcnow
from clarion.kit.interpreter import rarer_young_collections, shorter_switch_interval

__all__ = ["Columns", "EmailNormalizer", "ImportRow", "RecordReader", "Rejection", "attribute_value",
           "check_utf8_text", "import_csv", "parse_header", "plan_chunk"]

IMPORT_SOURCE = "import"
_SCAN_BLOCK = 1 << 20


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


def read_header(reader: Any) -> Columns:
    try:
        header = next(reader)
    except StopIteration:
        raise Invalid("the file is empty: a CSV header with an email or phone column is expected",
                      errors=[field_error(["body", "file"], "empty file", "missing")]) from None
    except csv.Error as exc:
        raise Invalid(f"the CSV header cannot be read: {exc}",
                      errors=[field_error(["body", "file", "header"], str(exc))]) from exc
    return parse_header(header)


class RecordReader:
    """Data rows of a CSV reader, with the line each starts on, plus its malformed lines, read a given count at a
    time.

    A row's line is the physical line it starts on (the header is line 1); quoted values may span lines.
    Blank lines are skipped.
    """

    def __init__(self, reader: Any) -> None:
        self.reader = reader
        self.exhausted = False
        self._next_line = reader.line_num + 1

    def read(self, rows: int) -> tuple[list[int], list[list[str]], list[Rejection]]:
        """The next `rows` records (blank and malformed lines included, then left out; fewer only at the end of
        the file): the lines the rows start on, their cells, and the malformed lines.

        Rows are taken from the reader in bulk (islice), numbered afterwards: when the reader moved on by as many
        lines as it gave rows, row k is on the k-th line; otherwise some value spans lines, and each row starts
        as many lines after the one before it as that row's values hold line breaks, plus one."""
        reader = self.reader
        lines: list[int] = []
        cells: list[list[str]] = []
        malformed: list[Rejection] = []
        wanted = rows
        while wanted > 0 and not self.exhausted:
            first_line, start = self._next_line, len(cells)
            error: csv.Error | None = None
            try:
                cells.extend(islice(reader, wanted))  # on an error, the rows read before it stay in `cells`
            except csv.Error as exc:
                error = exc
            got = len(cells) - start
            if reader.line_num - first_line + 1 == got + (error is not None):
                lines.extend(range(first_line, first_line + got))
                line = first_line + got
            else:
                line = first_line
                for position in range(start, len(cells)):
                    lines.append(line)
                    line += 1 + _line_breaks("\x00".join(cells[position]))  # cells apart: "\r" + "\n" is 2
            if error is not None:
                malformed.append(Rejection(line, f"malformed CSV: {error}"))
                wanted -= 1
            elif got < wanted:
                self.exhausted = True
            wanted -= got
            self._next_line = reader.line_num + 1
        if cells and min(map(len, cells)) <= 1:
            kept = [position for position, row in enumerate(cells) if len(row) > 1 or (row and row[0].strip())]
            lines = [lines[position] for position in kept]
            cells = [cells[position] for position in kept]
        return lines, cells, malformed


def _line_breaks(text: str) -> int:
    """Line breaks as the reader's line iterator splits lines (newline=""): CR LF, a lone CR, a lone LF."""
    return text.count("\n") + text.count("\r") - text.count("\r\n")


# --- upsert planning ---------------------------------------------------------------------------------------

@dataclass
class ChunkPlan:
    # New contacts in file order: still exactly their validated row (most of them), or a PlannedContact once a
    # later row of the chunk changed them.
    inserts: list[NewRow | PlannedContact] = field(default_factory=list)
    updates: list[PlannedContact] = field(default_factory=list)
    created: int = 0
    updated: int = 0
    rejections: list[Rejection] = field(default_factory=list)


def _apply_row(target: PlannedContact, row: RowTuple) -> None:
    if row[FIRST_NAME] is not None:
        target.first_name = row[FIRST_NAME]
    if row[LAST_NAME] is not None:
        target.last_name = row[LAST_NAME]
    if row[LOCALE] is not None:
        target.locale = row[LOCALE]
    if row[TIMEZONE] is not None:
        target.timezone = row[TIMEZONE]
    if row[EMAIL] is not None and row[EMAIL] != target.email:
        target.email, target.email_changed = row[EMAIL], True
    if row[PHONE] is not None and row[PHONE] != target.phone:
        target.phone, target.phone_changed = row[PHONE], True
    if row[ATTRIBUTES_JSON] != EMPTY_OBJECT_JSON:
        target.attributes = {**target.attributes, **json.loads(row[ATTRIBUTES_JSON])}
        target.attributes_json = None
    if row[TAGS_JSON] != EMPTY_LIST_JSON:
        for tag in json.loads(row[TAGS_JSON]):
            if tag not in target.tags:
                target.tags = [*target.tags, tag]
                target.tags_json = None
    target.changed = True


def _planned(inserts: list[NewRow | PlannedContact], owner: PlannedContact | int | None) -> PlannedContact | None:
    """The contact an address points at; a new contact still held as its row becomes a PlannedContact (in place)."""
    if type(owner) is not int:
        return owner  # type: ignore[return-value]
    item = inserts[owner]
    if type(item) is tuple:
        row = item
        item = inserts[owner] = PlannedContact(
            None, row[EMAIL], row[PHONE], row[FIRST_NAME], row[LAST_NAME], row[LOCALE], row[TIMEZONE],
            json.loads(row[ATTRIBUTES_JSON]), json.loads(row[TAGS_JSON]), True,
            default_bits_of(row[EMAIL], row[PHONE]), tags_json=row[TAGS_JSON], attributes_json=row[ATTRIBUTES_JSON])
    return item  # type: ignore[return-value]


def plan_chunk(rows: list[RowTuple], existing: list[ExistingContact]) -> ChunkPlan:
    """Match each row, in file order, to the contact owning its email, else its phone, else a new contact.

    Rows of the chunk see the effect of earlier rows, exactly as later chunks see the database: the result does
    not depend on where chunk boundaries fall. A new contact is subscribed by default to the channels of the
    addresses of the row that created it (see audience.consent); existing consent is never changed.
    """
    plan = ChunkPlan()
    if not existing and _no_address_twice(rows):
        # A chunk of new contacts only (the common case): each is written straight from its row.
        plan.inserts, plan.created = list(rows), len(rows)
        return plan
    # Address → its owner so far: a PlannedContact, or a new contact's position in plan.inserts.
    by_email: dict[str, PlannedContact | int] = {}
    by_phone: dict[str, PlannedContact | int] = {}
    updated_ids: set[uuid.UUID] = set()
    for found in existing:
        contact = PlannedContact(found.id, found.email, found.phone, found.first_name, found.last_name,
                                 found.locale, found.timezone, dict(found.attributes or {}), list(found.tags or []),
                                 is_new=False)
        if contact.email:
            by_email[contact.email] = contact
        if contact.phone:
            by_phone[contact.phone] = contact
    inserts = plan.inserts
    for row in rows:
        email, phone = row[EMAIL], row[PHONE]
        owner_of_email = by_email.get(email) if email else None
        owner_of_phone = by_phone.get(phone) if phone else None
        if owner_of_email is None and owner_of_phone is None:
            # A new contact (the common case): written straight from its row.
            if email:
                by_email[email] = len(inserts)
            if phone:
                by_phone[phone] = len(inserts)
            inserts.append(row)
            plan.created += 1
            continue
        owner_of_email = _planned(inserts, owner_of_email)
        owner_of_phone = _planned(inserts, owner_of_phone)
        if owner_of_email is not None and owner_of_phone is not None and owner_of_email is not owner_of_phone:
            plan.rejections.append(Rejection(
                row[LINE], f"email {email} and phone {phone} belong to two different contacts"))
            continue
        target: PlannedContact = owner_of_email or owner_of_phone  # type: ignore[assignment]
        old_email, old_phone = target.email, target.phone
        _apply_row(target, row)
        if target.email != old_email and old_email is not None:
            by_email.pop(old_email, None)
        if target.phone != old_phone and old_phone is not None:
            by_phone.pop(old_phone, None)
        if not target.is_new and target.id not in updated_ids:
            updated_ids.add(target.id)  # type: ignore[arg-type]
            plan.updates.append(target)
        plan.updated += 1
        if target.email:
            by_email[target.email] = target
        if target.phone:
            by_phone[target.phone] = target
    return plan


def _no_address_twice(rows: list[RowTuple]) -> bool:
    for position in (EMAIL, PHONE):
        present = list(filter(None, map(itemgetter(position), rows)))
        if len(set(present)) != len(present):
            return False
    return True


# --- validated chunks, in slices on the event loop ----------------------------------------------------------

# A chunk's valid rows, its rejected lines, and how far into the file it ends.
ValidatedChunk = tuple[list[RowTuple], list[Rejection], int]
# Rows read and validated between two returns to the event loop: ~2 ms of CPU, so other requests (and the
# database I/O of the chunk being written) wait at most that long.
_SLICE_ROWS = 400


async def _validated_in_slices(reader: Any, binary: BinaryIO, columns: Columns, default_region: str | None,
                               chunk_rows: int) -> AsyncIterator[ValidatedChunk]:
    """Read and validate on the event loop, a slice at a time. Not in a thread: the thread and the event loop,
    which drives the database I/O, would contend for the GIL, each hand-over waiting for the interpreter's switch
    interval; measured slower on both databases (at the default 5 ms, before imports shortened it)."""
    source = RecordReader(reader)
    while not source.exhausted:
        rows: list[RowTuple] = []
        rejections: list[Rejection] = []
        counted = 0
        while counted < chunk_rows and not source.exhausted:
            lines, cells, malformed = source.read(min(_SLICE_ROWS, chunk_rows - counted))
            valid, invalid = validate_chunk(columns, default_region, lines, cells)
            rows += valid
            rejections += malformed
            rejections += invalid
            counted += len(lines) + len(malformed)
            await asyncio.sleep(0)
        if counted:
            yield rows, rejections, binary.tell()


# --- the chunk loop ----------------------------------------------------------------------------------------

async def import_csv(
    session: AsyncSession,
    tenant_id: uuid.UUID,
    binary: BinaryIO,
    *,
    default_region: str | None,
    chunk_rows: int,
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

    # Until a chunk meets an existing contact, chunks are written without looking their addresses up first: if
    # none exists, a plan made without the lookup is the plan the lookup would give, and the unique indexes check
    # that while the rows go in (a new list's import, the common case, never looks up). Once one does, the rest of
    # the file is looked up first, so a file of known contacts wastes at most one chunk's attempt.
    optimistic = True

    async def write_chunk(rows: list[RowTuple], rejections: list[Rejection], position: int,
                          unchecked_plan: ChunkPlan | None, handed_over: asyncio.Event) -> None:
        """Write a chunk; `unchecked_plan` is its plan made without a lookup (None once lookups are on)."""
        nonlocal created, updated, optimistic
        try:
            if overlap:
                handed_over.set()
            plan: ChunkPlan | None = None
            if optimistic and unchecked_plan is not None:
                plan = unchecked_plan
                if not await repo.insert_if_all_new(plan.inserts, now=utcnow(), source=IMPORT_SOURCE,
                                                    handed_over=handed_over.set):
                    plan, optimistic = None, False
            if plan is None:
                existing = await repo.find_owners(sorted({r[EMAIL] for r in rows if r[EMAIL]}),
                                                  sorted({r[PHONE] for r in rows if r[PHONE]}))
                plan = plan_chunk(rows, existing)
                try:
                    await repo.write(plan.inserts, plan.updates, now=utcnow(), source=IMPORT_SOURCE)
                except IntegrityError as exc:
                    raise Conflict("contacts changed while the import ran (another writer took one of its emails "
                                   "or phones); nothing of this chunk was written, run the import again") from exc
            created += plan.created
            updated += plan.updated
            rejected.extend({"line": r.line, "reason": r.reason}
                            for r in sorted(rejections + plan.rejections, key=lambda r: r.line))
            if after_chunk is not None:
                await after_chunk()
            if on_progress is not None:
                on_progress(position)
        finally:
            handed_over.set()

    # A chunk is written by a task while this coroutine reads and validates the next one, from the moment the
    # write is handed over to the database. On PostgreSQL that is at once: the server does most of the work in
    # its own process, this one's part interleaves on the event loop. On SQLite, only once the rows are staged
    # (see ContactImportRepo.write): the rest is one statement that runs without the GIL, while staging binds
    # every value under it, and the two would take turns at the interpreter's switch interval. Chunk N+1 is
    # looked up only once chunk N is written, so it sees N's contacts.
    overlap = await repo.written_by_another_process()
    writing: asyncio.Task[None] | None = None
    try:
        reader = csv.reader(text)
        columns = await asyncio.to_thread(read_header, reader)
        chunks = _validated_in_slices(reader, binary, columns, default_region, chunk_rows)
        try:
            with rarer_young_collections(), shorter_switch_interval():
                async for chunk in chunks:
                    # Planned before the previous chunk's write is awaited: while the database still works on it.
                    unchecked_plan = plan_chunk(chunk[0], []) if optimistic else None
                    if writing is not None:
                        await writing
                        writing = None
                    handed_over = asyncio.Event()
                    writing = asyncio.create_task(write_chunk(*chunk, unchecked_plan, handed_over))
                    await handed_over.wait()
                if writing is not None:
                    await writing
        finally:
            if writing is not None and not writing.done():
                writing.cancel()  # this import failed: no chunk is written after that
                await asyncio.wait([writing])
            if writing is not None and not writing.cancelled():
                writing.exception()  # raised above, or superseded by the error that ends the import
            await chunks.aclose()
    finally:
        text.detach()  # the caller owns the binary stream; closing the wrapper must not close it
    return ImportResult(created=created, updated=updated, rejected=rejected)
