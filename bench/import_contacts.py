"""Bench (a): importing contacts through Clarion vs a raw bulk load of the same rows into a bare table.

    python -m bench.import_contacts [--rows N] [--db sqlite|postgres|both] [--repeat R] [--all-phones] [--stages]

The CSV is generated (streamed) into a temp file. By default it is shaped like a marketing list: every row has an
email, one in three a phone, and all have first/last name, locale, time zone, tags and two attributes;
`--all-phones` gives every row a phone (the worst case: phone validation is the costliest check). Clarion's side
runs the importer in-process against a freshly migrated database, committing per chunk as the CLI does; the raw
side loads the same file into a bare table with the same columns (PostgreSQL: COPY of the file; SQLite: csv rows
through executemany in one transaction). The two run alternately, `--repeat` times, each Clarion run on a fresh
database; the ratio of each pair and their spread are printed. Target: Clarion reaches at least 40% of the raw
rows/s.

Besides wall time, each Clarion run reports CPU per row: this process's, and on PostgreSQL the server backend's
(read from /proc, so the server must run on this host). On a shared machine the wall time moves with the load;
the CPU figures barely do. `--stages` adds one sequential, instrumented import that times each stage per row
(read, validate, look up, plan, write, commit): where the time goes.
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import io
import sqlite3
import statistics
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.common import cpu_seconds, migrated_sqlite, postgres_database

TARGET_RATIO = 0.40
COLUMNS = ("email", "phone", "first_name", "last_name", "locale", "timezone", "tags", "city", "score")
_ZONES = ("Europe/Berlin", "America/New_York", "Asia/Tokyo", "Europe/London")
_CITIES = ("Berlin", "New York", "Tokyo", "London", "Paris")


def generate_csv(path: Path, rows: int, *, all_phones: bool = False) -> None:
    """Unique emails and valid, unique US phone numbers (on every third row, or every row); streamed."""
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(COLUMNS)
        for i in range(rows):
            # 212-2xx-xxxx … : NANP numbers that phonenumbers accepts as valid, distinct for i < 8,000,000.
            phone = f"+1212{200 + i // 10_000:03d}{i % 10_000:04d}" if all_phones or i % 3 == 0 else ""
            writer.writerow((f"user{i}@example{i % 97}.com", phone, f"First{i}", f"Last{i}", "en-US",
                             _ZONES[i % 4], "customer;tier" + str(i % 3), _CITIES[i % 5], i % 1000))


def bare_table_ddl(dialect: str) -> str:
    id_type = "uuid DEFAULT gen_random_uuid()" if dialect == "postgresql" else "INTEGER"
    return (f"CREATE TABLE raw_contacts (id {id_type} PRIMARY KEY, email varchar(320), phone varchar(20), "
            "first_name varchar(200), last_name varchar(200), locale varchar(35), timezone varchar(64), "
            "tags text, city text, score text)")


# --- CPU accounting --------------------------------------------------------------------------------------

async def _backend_pid(session: Any) -> int | None:
    from sqlalchemy import text

    if session.get_bind().dialect.name != "postgresql":
        return None
    return int((await session.execute(text("SELECT pg_backend_pid()"))).scalar_one())


@dataclass
class Run:
    seconds: float
    cpu_seconds: float  # this process, all threads
    server_cpu_seconds: float  # the PostgreSQL backend; 0 on SQLite
    counts: dict[str, int] = field(default_factory=dict)


# --- Clarion's side ----------------------------------------------------------------------------------------

async def _new_tenant(db: Any) -> uuid.UUID:
    from clarion.tenancy import service as tenancy

    async with db.transaction() as session:
        return (await tenancy.create_tenant(session, "bench")).id


async def clarion_import(url: str, csv_path: Path) -> Run:
    from clarion.audience import service
    from clarion.config import get_settings
    from clarion.db import Database

    db = Database(url)
    try:
        tenant_id = await _new_tenant(db)
        async with db.transaction() as session:
            pid = await _backend_pid(session)
            server_before, cpu_before = cpu_seconds(pid), time.process_time()
            started = time.perf_counter()
            with csv_path.open("rb") as binary:
                result = await service.import_contacts(session, tenant_id, binary,
                                                       chunk_rows=get_settings().import_chunk_rows,
                                                       after_chunk=session.commit)
            elapsed = time.perf_counter() - started
            cpu, server = time.process_time() - cpu_before, cpu_seconds(pid) - server_before
    finally:
        await db.dispose()
    return Run(elapsed, cpu, server, {"created": result.created, "updated": result.updated,
                                      "rejected": len(result.rejected)})


@dataclass
class Stages:
    """Seconds per stage of a sequential import: thread CPU for the pure-Python ones, wall time (plus this
    process's and the server's CPU) for the ones that talk to the database."""

    cpu: dict[str, float] = field(default_factory=dict)
    wall: dict[str, float] = field(default_factory=dict)
    server: dict[str, float] = field(default_factory=dict)

    @contextmanager
    def timing(self, stage: str, server_pid: int | None = None) -> Iterator[None]:
        cpu, wall, server = time.thread_time(), time.perf_counter(), cpu_seconds(server_pid)
        try:
            yield
        finally:
            self.cpu[stage] = self.cpu.get(stage, 0.0) + time.thread_time() - cpu
            self.wall[stage] = self.wall.get(stage, 0.0) + time.perf_counter() - wall
            self.server[stage] = self.server.get(stage, 0.0) + cpu_seconds(server_pid) - server


async def clarion_stages(url: str, csv_path: Path) -> Stages:
    """The importer's steps one after the other, each timed (no overlap: what each costs on its own)."""
    from clarion.audience import importer
    from clarion.audience.import_repository import ContactImportRepo
    from clarion.audience.import_validation import EMAIL, PHONE, validate_chunk
    from clarion.config import get_settings
    from clarion.db import Database
    from clarion.kit.clock import utcnow
    from clarion.kit.interpreter import rarer_young_collections

    chunk_rows = get_settings().import_chunk_rows
    stages = Stages()
    db = Database(url)
    try:
        tenant_id = await _new_tenant(db)
        async with db.transaction() as session:
            pid = await _backend_pid(session)
            repo = ContactImportRepo(session, tenant_id)
            with csv_path.open("rb") as binary, rarer_young_collections():
                text = io.TextIOWrapper(binary, encoding="utf-8-sig", newline="")
                reader = csv.reader(text)
                columns = importer.read_header(reader)
                source = importer.RecordReader(reader)
                optimistic = True  # as the importer: no lookups until a chunk meets an existing contact
                while not source.exhausted:
                    with stages.timing("read CSV"):
                        lines, cells, _ = source.read(chunk_rows)
                    with stages.timing("validate"):
                        rows, _ = validate_chunk(columns, None, lines, cells)
                    written = False
                    if optimistic:
                        with stages.timing("plan"):
                            plan = importer.plan_chunk(rows, [])
                        with stages.timing("write", pid):
                            written = optimistic = await repo.insert_if_all_new(
                                plan.inserts, now=utcnow(), source=importer.IMPORT_SOURCE)
                    if not written:
                        with stages.timing("look up owners", pid):
                            existing = await repo.find_owners(sorted({r[EMAIL] for r in rows if r[EMAIL]}),
                                                              sorted({r[PHONE] for r in rows if r[PHONE]}))
                        with stages.timing("plan"):
                            plan = importer.plan_chunk(rows, existing)
                        with stages.timing("write", pid):
                            await repo.write(plan.inserts, plan.updates, now=utcnow(),
                                             source=importer.IMPORT_SOURCE)
                    with stages.timing("commit", pid):
                        await session.commit()
                text.detach()
    finally:
        await db.dispose()
    return stages


# --- the raw side ------------------------------------------------------------------------------------------

def raw_load_sqlite(path: Path, csv_path: Path) -> float:
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=NORMAL")
    conn.execute(bare_table_ddl("sqlite"))
    started = time.perf_counter()
    with csv_path.open(newline="", encoding="utf-8") as handle, conn:
        reader = csv.reader(handle)
        next(reader)
        conn.executemany(f"INSERT INTO raw_contacts ({', '.join(COLUMNS)}) VALUES ({', '.join('?' * len(COLUMNS))})",
                         reader)
    elapsed = time.perf_counter() - started
    conn.close()
    return elapsed


def raw_load_postgres(url: str, csv_path: Path) -> float:
    import psycopg

    with psycopg.connect(url) as conn:
        conn.execute(bare_table_ddl("postgresql"))
        conn.commit()
        started = time.perf_counter()
        copy_sql = f"COPY raw_contacts ({', '.join(COLUMNS)}) FROM STDIN (FORMAT csv, HEADER true)"
        with conn.cursor() as cursor, csv_path.open("rb") as handle, cursor.copy(copy_sql) as copy:
            while block := handle.read(1 << 20):
                copy.write(block)
        conn.commit()
        return time.perf_counter() - started


# --- databases and reporting -------------------------------------------------------------------------------

@contextmanager
def fresh_database(dialect: str, workdir: Path) -> Iterator[tuple[str, str]]:
    """A freshly migrated database: (SQLAlchemy URL for Clarion, plain URL or file path for the raw side)."""
    if dialect != "sqlite":
        with postgres_database() as urls:
            yield urls
        return
    path = workdir / f"clarion-{uuid.uuid4().hex[:8]}.db"
    try:
        yield migrated_sqlite(path), str(workdir / f"raw-{uuid.uuid4().hex[:8]}.db")
    finally:
        for leftover in workdir.glob(f"{path.name}*"):
            leftover.unlink()


def _us(seconds: float, rows: int) -> str:
    return f"{seconds / rows * 1e6:6.1f}"


def bench(dialect: str, label: str, rows: int, csv_path: Path, workdir: Path, repeat: int, stages: bool) -> None:
    raw_load: Callable[[str, Path], float] = (
        (lambda target, path: raw_load_sqlite(Path(target), path)) if dialect == "sqlite" else raw_load_postgres)
    ratios = []
    print(f"[{label}] {rows:,} rows, {repeat} alternating runs (µs/row: wall | Clarion process CPU"
          f"{' | server CPU' if dialect != 'sqlite' else ''})")
    for attempt in range(1, repeat + 1):
        with fresh_database(dialect, workdir) as (url, raw_target):
            run = asyncio.run(clarion_import(url, csv_path))
            raw_s = raw_load(raw_target, csv_path)
        ratio = raw_s / run.seconds
        ratios.append(ratio)
        server = f" | {_us(run.server_cpu_seconds, rows)}" if dialect != "sqlite" else ""
        print(f"  run {attempt}: clarion {rows / run.seconds:9,.0f} rows/s ({_us(run.seconds, rows)} |"
              f"{_us(run.cpu_seconds, rows)}{server})   raw {rows / raw_s:9,.0f} rows/s ({_us(raw_s, rows)})"
              f"   ratio {ratio:6.1%}   {run.counts}")
    verdict = "met" if statistics.median(ratios) >= TARGET_RATIO else "NOT met"
    print(f"  ratio: median {statistics.median(ratios):.1%}, range {min(ratios):.1%}–{max(ratios):.1%}"
          f"  (target >= {TARGET_RATIO:.0%}: {verdict})")
    if stages:
        with fresh_database(dialect, workdir) as (url, _):
            timed = asyncio.run(clarion_stages(url, csv_path))
        print("  stages, one after the other (µs/row): wall | this thread's CPU | server CPU")
        for stage, wall in timed.wall.items():
            print(f"    {stage:16s} {_us(wall, rows)} | {_us(timed.cpu[stage], rows)} | "
                  f"{_us(timed.server[stage], rows)}")
        print(f"    {'total':16s} {_us(sum(timed.wall.values()), rows)}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--db", choices=("sqlite", "postgres", "both"), default="both")
    parser.add_argument("--repeat", type=int, default=3, help="alternating Clarion/raw runs per database")
    parser.add_argument("--all-phones", action="store_true",
                        help="every row has a phone (worst case) instead of one in three")
    parser.add_argument("--stages", action="store_true", help="also time each import stage on its own")
    args = parser.parse_args()
    mix = "all rows with a phone (worst case)" if args.all_phones else "marketing list: email on every row, phone on 1 in 3"
    with tempfile.TemporaryDirectory(prefix="clarion-bench-") as tmp:
        workdir = Path(tmp)
        csv_path = workdir / "contacts.csv"
        started = time.perf_counter()
        generate_csv(csv_path, args.rows, all_phones=args.all_phones)
        print(f"data mix: {mix}")
        print(f"generated {args.rows:,} rows ({csv_path.stat().st_size / 1e6:.0f} MB) in "
              f"{time.perf_counter() - started:.1f} s")
        if args.db in ("sqlite", "both"):
            bench("sqlite", "sqlite", args.rows, csv_path, workdir, args.repeat, args.stages)
        if args.db in ("postgres", "both"):
            bench("postgresql", "postgres", args.rows, csv_path, workdir, args.repeat, args.stages)


if __name__ == "__main__":
    main()
