"""Bench (a): importing contacts through Clarion vs a raw bulk load of the same rows into a bare table.

    python -m bench.import_contacts [--rows N] [--db sqlite|postgres|both] [--all-phones]

The CSV is generated (streamed) into a temp file. By default it is shaped like a marketing list: every row has an
email, one in three a phone, and all have first/last name, locale, time zone, tags and two attributes;
`--all-phones` gives every row a phone (the worst case: phone validation is the costliest check, and each such
contact gets three subscriptions instead of one). Clarion's side runs the importer in-process against a freshly
migrated database, committing per chunk as the CLI does; the raw side loads the same file into a bare table with
the same columns (PostgreSQL: COPY of the file; SQLite: csv rows through executemany in one transaction).
Target: Clarion reaches at least 40% of the raw rows/s.
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import os
import sqlite3
import tempfile
import time
import uuid
from pathlib import Path

TARGET_RATIO = 0.40
PG_ADMIN_URL = os.environ.get("CLARION_BENCH_PG_URL", "postgresql://postgres@127.0.0.1:5432/test")
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


async def clarion_import(url: str, csv_path: Path) -> tuple[float, dict[str, int]]:
    from clarion.audience import service
    from clarion.config import get_settings
    from clarion.db import Database
    from clarion.tenancy import service as tenancy

    db = Database(url)
    try:
        async with db.transaction() as session:
            tenant = await tenancy.create_tenant(session, "bench")
        started = time.perf_counter()
        async with db.transaction() as session:
            with csv_path.open("rb") as binary:
                result = await service.import_contacts(session, tenant.id, binary,
                                                       chunk_rows=get_settings().import_chunk_rows,
                                                       after_chunk=session.commit)
        elapsed = time.perf_counter() - started
    finally:
        await db.dispose()
    return elapsed, {"created": result.created, "updated": result.updated, "rejected": len(result.rejected)}


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
        with conn.cursor() as cursor, csv_path.open("rb") as handle:
            with cursor.copy(f"COPY raw_contacts ({', '.join(COLUMNS)}) FROM STDIN (FORMAT csv, HEADER true)") as copy:
                while block := handle.read(1 << 20):
                    copy.write(block)
        conn.commit()
        return time.perf_counter() - started


def report(label: str, rows: int, clarion_s: float, raw_s: float, counts: dict[str, int]) -> None:
    clarion_rate, raw_rate = rows / clarion_s, rows / raw_s
    ratio = clarion_rate / raw_rate
    verdict = "met" if ratio >= TARGET_RATIO else "NOT met"
    print(f"[{label}] {rows:,} rows  result={counts}")
    print(f"  clarion import : {clarion_s:8.2f} s  {clarion_rate:12,.0f} rows/s")
    print(f"  raw bulk load  : {raw_s:8.2f} s  {raw_rate:12,.0f} rows/s")
    print(f"  ratio          : {ratio:8.1%}  (target >= {TARGET_RATIO:.0%}: {verdict})")


def bench_sqlite(rows: int, csv_path: Path, workdir: Path) -> None:
    from clarion.migrate import upgrade

    url = f"sqlite+aiosqlite:///{workdir / 'clarion.db'}"
    upgrade(url)
    clarion_s, counts = asyncio.run(clarion_import(url, csv_path))
    raw_s = raw_load_sqlite(workdir / "raw.db", csv_path)
    report("sqlite", rows, clarion_s, raw_s, counts)


def bench_postgres(rows: int, csv_path: Path) -> None:
    import psycopg

    from clarion.migrate import upgrade

    name = f"clarion_bench_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(PG_ADMIN_URL, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    base = PG_ADMIN_URL.rsplit("/", 1)[0]
    try:
        upgrade(f"{base}/{name}".replace("postgresql://", "postgresql+psycopg://", 1))
        clarion_s, counts = asyncio.run(clarion_import(f"{base}/{name}".replace("postgresql://",
                                                                               "postgresql+psycopg://", 1), csv_path))
        raw_s = raw_load_postgres(f"{base}/{name}", csv_path)
        report("postgres", rows, clarion_s, raw_s, counts)
    finally:
        with psycopg.connect(PG_ADMIN_URL, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--db", choices=("sqlite", "postgres", "both"), default="both")
    parser.add_argument("--all-phones", action="store_true",
                        help="every row has a phone (worst case) instead of one in three")
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
            bench_sqlite(args.rows, csv_path, workdir)
        if args.db in ("postgres", "both"):
            bench_postgres(args.rows, csv_path)


if __name__ == "__main__":
    main()
