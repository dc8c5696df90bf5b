"""Contact import from CSV: reading, upsert planning and the chunk loop (row validation: import_validation).

The file is never held in memory: it is read incrementally through a text wrapper and handled in chunks of
`chunk_rows` rows. Per chunk, rows are validated (a pure function, see import_validation), matched against one
lookup of the contacts that own the chunk's emails and phones, and written with set-based statements (see
import_repository).

A big file on a host with CPUs to spare is pipelined: a worker process validates chunk N+1 while this process
writes chunk N, with at most `_IN_FLIGHT` chunks handed over at a time, so memory stays flat. Small files (tests,
most API uploads) are validated in-process: starting a worker would cost more than it saves. Both paths give
identical results. The worker is started with `spawn`, so a script that runs an import must guard its entry
point with `if __name__ == "__main__":` (as any multiprocessing user must); should the worker die anyway, the
import goes on validating in-process.

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
import multiprocessing
import os
import uuid
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from typing import Any, BinaryIO

from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from clarion.audience.import_repository import ContactImportRepo, ExistingContact, PlannedContact
from clarion.audience.import_validation import (
    ATTRIBUTES,
    ATTRIBUTES_JSON,
    EMAIL,
    FIRST_NAME,
    KNOWN_COLUMNS,
    LAST_NAME,
    LINE,
    LOCALE,
    PHONE,
    TAGS,
    TAGS_JSON,
    TIMEZONE,
    Columns,
    EmailNormalizer,
    ImportRow,
    Rejection,
    RowTuple,
    RowValidator,
    attribute_value,
    validate_chunk,
)
from clarion.audience.schemas import ImportResult
from clarion.errors import Conflict, Invalid, field_error
from clarion.kit.clock import utcnow
from clarion.kit.ids import new_id

__all__ = ["Columns", "EmailNormalizer", "ImportRow", "Rejection", "RowValidator", "attribute_value",
           "check_utf8_text", "import_csv", "parse_header", "plan_chunk", "read_records"]

IMPORT_SOURCE = "import"
_SCAN_BLOCK = 1 << 20
# Below this size a file is validated in-process; above it a worker process validates while this one writes.
# ~4 MB is ~40,000 typical rows: from there on the overlap saves more than a worker's start-up (~0.5 s).
POOL_MIN_BYTES = 4 << 20
# Measured on a 2-CPU host (bench/import_contacts.py, 100k rows): the worker made the import slower on both
# databases (SQLite 10.8k vs 16.6k rows/s, PostgreSQL 8.0k vs 10.6k): validation then competes with the
# writing process and the database for the same two CPUs, and moving rows between processes costs ~10 µs a row.
# So the pipeline is used only where a CPU is left over for it.
_POOL_MIN_CPUS = 3
# Chunks handed to the worker and not yet written: one being validated, one queued behind it.
_IN_FLIGHT = 2


# --- reading -----------------------------------------------------------------------------------------------

def check_utf8_text(binary: BinaryIO) -> int:
    """Reject a file that is not UTF-8 text before anything is written, then rewind it; returns its size.

    One streaming pass (a block at a time): an import never fails half-way on an undecodable byte.
    """
    decoder = codecs.getincrementaldecoder("utf-8")()
    line = 1
    size = 0
    while block := binary.read(_SCAN_BLOCK):
        size += len(block)
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
    return size


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


def read_records(reader: Any, chunk_rows: int
                 ) -> Iterator[tuple[list[tuple[int, list[str]]], list[Rejection]]]:
    """Yield per chunk of at most `chunk_rows` data rows: the (line, cells) records and the malformed lines.

    A row's line is the physical line it starts on (the header is line 1); quoted values may span lines.
    Blank lines are skipped and do not count towards a chunk.
    """
    records: list[tuple[int, list[str]]] = []
    malformed: list[Rejection] = []
    counted = 0
    next_line = reader.line_num + 1
    while True:
        line = next_line
        try:
            cells = next(reader)
        except StopIteration:
            break
        except csv.Error as exc:
            malformed.append(Rejection(line, f"malformed CSV: {exc}"))
            cells = None
        next_line = reader.line_num + 1
        if cells is not None:
            if not cells or (len(cells) == 1 and not cells[0].strip()):
                continue  # blank line
            records.append((line, cells))
        counted += 1
        if counted >= chunk_rows:
            yield records, malformed
            records, malformed, counted = [], [], 0
    if counted:
        yield records, malformed


# --- upsert planning ---------------------------------------------------------------------------------------

@dataclass
class ChunkPlan:
    inserts: list[PlannedContact] = field(default_factory=list)
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
    if row[ATTRIBUTES]:
        target.attributes = {**target.attributes, **row[ATTRIBUTES]}
        target.attributes_json = None
    for tag in row[TAGS]:
        if tag not in target.tags:
            target.tags = [*target.tags, tag]
            target.tags_json = None
    target.changed = True


def plan_chunk(rows: list[RowTuple], existing: list[ExistingContact],
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
    channels_for: dict[tuple[bool, bool], tuple[str, ...]] = {}
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
        if owner_of_email is not None and owner_of_phone is not None and owner_of_email is not owner_of_phone:
            plan.rejections.append(Rejection(
                row[LINE], f"email {email} and phone {phone} belong to two different contacts"))
            continue
        target = owner_of_email or owner_of_phone
        if target is None:
            present = (email is not None, phone is not None)
            channels = channels_for.get(present)
            if channels is None:
                channels = channels_for[present] = tuple(
                    channel for address, has in zip(("email", "phone"), present) if has
                    for channel in channels_of_address.get(address, ()))
            # The row's own tags list and attributes dict: _apply_row replaces them, never mutates them.
            target = PlannedContact(new_id(), email, phone, row[FIRST_NAME], row[LAST_NAME], row[LOCALE],
                                    row[TIMEZONE], row[ATTRIBUTES], row[TAGS], True, channels,
                                    tags_json=row[TAGS_JSON], attributes_json=row[ATTRIBUTES_JSON])
            inserts.append(target)
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


# --- validated chunks: in-process or pipelined through a worker process ---------------------------------

ValidatedChunk = tuple[list[RowTuple], list[Rejection]]


def _next_chunk_inline(records: Iterator[Any], columns: Columns, default_region: str | None) -> ValidatedChunk | None:
    chunk = next(records, None)
    if chunk is None:
        return None
    items, malformed = chunk
    rows, rejections = validate_chunk(columns, default_region, items)
    return rows, malformed + rejections


async def _validated_chunks(records: Iterator[Any], columns: Columns, default_region: str | None,
                            pool: ProcessPoolExecutor | None) -> AsyncIterator[ValidatedChunk]:
    if pool is None:
        while True:
            # Parsing and validation are CPU work: off the event loop so other requests keep being served.
            chunk = await asyncio.to_thread(_next_chunk_inline, records, columns, default_region)
            if chunk is None:
                return
            yield chunk
    pending: deque[tuple[Future[ValidatedChunk], list[tuple[int, list[str]]], list[Rejection]]] = deque()
    exhausted = broken = False
    while True:
        while not exhausted and len(pending) < _IN_FLIGHT:
            raw = await asyncio.to_thread(next, records, None)
            if raw is None:
                exhausted = True
                break
            items, malformed = raw
            if broken:
                rows, rejections = await asyncio.to_thread(validate_chunk, columns, default_region, items)
                yield rows, malformed + rejections
                continue
            pending.append((pool.submit(validate_chunk, columns, default_region, items), items, malformed))
        if not pending:
            return
        future, items, malformed = pending.popleft()
        try:
            rows, rejections = await asyncio.wrap_future(future)
        except BrokenProcessPool:
            # The worker died (killed, or an unguarded entry script under spawn): validate here instead.
            broken = True
            rows, rejections = await asyncio.to_thread(validate_chunk, columns, default_region, items)
        yield rows, malformed + rejections


def _validation_pool(workers: int) -> ProcessPoolExecutor | None:
    if workers < 1:
        return None
    # spawn, not fork: the importing process has running threads (event loop helpers, database drivers).
    return ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("spawn"))


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
    workers: int | None = None,
) -> ImportResult:
    """Import a CSV (a seekable binary stream) into the tenant's contacts; flushes, never commits.

    `after_chunk` runs once each chunk is written (the CLI commits there); `on_progress` gets the bytes read.
    `workers`: validation processes; None picks one for files of at least POOL_MIN_BYTES when the host has
    at least _POOL_MIN_CPUS CPUs, else none (validation in-process).
    """
    if chunk_rows < 1:
        raise ValueError("chunk_rows must be at least 1")
    size = await asyncio.to_thread(check_utf8_text, binary)
    if workers is None:
        workers = 1 if size >= POOL_MIN_BYTES and len(os.sched_getaffinity(0)) >= _POOL_MIN_CPUS else 0
    repo = ContactImportRepo(session, tenant_id)
    text = io.TextIOWrapper(binary, encoding="utf-8-sig", newline="")
    created = updated = 0
    rejected: list[dict[str, Any]] = []
    pool: ProcessPoolExecutor | None = None
    try:
        reader = csv.reader(text)
        columns = await asyncio.to_thread(read_header, reader)
        pool = _validation_pool(workers)
        chunks = _validated_chunks(read_records(reader, chunk_rows), columns, default_region, pool)
        try:
            async for rows, rejections in chunks:
                existing = await repo.find_owners(sorted({r[EMAIL] for r in rows if r[EMAIL]}),
                                                  sorted({r[PHONE] for r in rows if r[PHONE]}))
                plan = plan_chunk(rows, existing, channels_of_address)
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
                    on_progress(binary.tell())
        finally:
            await chunks.aclose()
    finally:
        if pool is not None:
            await asyncio.to_thread(pool.shutdown, wait=True, cancel_futures=True)
        text.detach()  # the caller owns the binary stream; closing the wrapper must not close it
    return ImportResult(created=created, updated=updated, rejected=rejected)
