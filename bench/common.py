"""What the benches share: a freshly migrated database of either kind, a free local port, a process's CPU time.

Not a bench itself (bench/__main__.py skips it).
"""

from __future__ import annotations

import os
import socket
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

# A PostgreSQL server the benches may create and drop databases on (CLARION_TEST_PG_URL, the tests' server, is
# taken when no bench-specific one is set).
PG_ADMIN_URL = os.environ.get("CLARION_BENCH_PG_URL") or os.environ.get(
    "CLARION_TEST_PG_URL", "postgresql://postgres@127.0.0.1:5432/test")


def migrated_sqlite(path: Path) -> str:
    """The SQLAlchemy URL of a SQLite database at `path`, migrated to head."""
    from clarion.migrate import upgrade

    url = f"sqlite+aiosqlite:///{path}"
    upgrade(url)
    return url


@contextmanager
def postgres_database(prefix: str = "clarion_bench", *, migrate: bool = True) -> Iterator[tuple[str, str]]:
    """A new PostgreSQL database, migrated to head unless `migrate` is False, dropped (even if still connected to)
    on exit: (its SQLAlchemy URL for Clarion, its plain URL for psycopg)."""
    import psycopg

    from clarion.migrate import upgrade

    name = f"{prefix}_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(PG_ADMIN_URL, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    plain = f"{PG_ADMIN_URL.rsplit('/', 1)[0]}/{name}"
    url = plain.replace("postgresql://", "postgresql+psycopg://", 1)
    try:
        if migrate:
            upgrade(url)
        yield url, plain
    finally:
        with psycopg.connect(PG_ADMIN_URL, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def free_port() -> int:
    """A local TCP port nothing listens on right now (for a server process the bench starts)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def cpu_seconds(pid: int | None, *, children: bool = False) -> float:
    """User + system CPU a local process has used so far, with its children's (uvicorn's workers) when `children`;
    read from /proc, so Linux only: 0 elsewhere, and for an unknown process (None: no such process to ask)."""
    if pid is None:
        return 0.0
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        kids = Path(f"/proc/{pid}/task/{pid}/children").read_text().split() if children else []
    except OSError:
        return 0.0
    own = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return own + sum(cpu_seconds(int(kid), children=True) for kid in kids)
