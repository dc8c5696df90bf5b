"""Schema migrations through Alembic: the only way the schema changes."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import create_engine, pool

from clarion.config import to_sync_url
from clarion.db import MIGRATIONS_DIR
from clarion.models.campaign_events import is_event_partition


def alembic_config(url: str) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    cfg.set_main_option("sqlalchemy.url", to_sync_url(url).replace("%", "%%"))
    return cfg


def include_name(name: str | None, type_: str, parent_names: dict[str, str | None]) -> bool:
    """Alembic's include_name hook: what autogenerate compares. The event log's monthly partitions (PostgreSQL)
    are storage created at run time, not tables the models describe, so they are neither added nor dropped."""
    return not (type_ == "table" and name is not None and is_event_partition(name))


def upgrade(url: str, revision: str = "head") -> None:
    if url.startswith("sqlite"):
        path = url.split("///", 1)[-1]
        if path and path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
    command.upgrade(alembic_config(url), revision)


def pending_revisions(url: str) -> tuple[str | None, str | None]:
    """(current, head) revision of the database at `url`; equal when the schema is up to date."""
    script = ScriptDirectory.from_config(alembic_config(url))
    engine = create_engine(to_sync_url(url), poolclass=pool.NullPool)
    try:
        with engine.connect() as conn:
            current = MigrationContext.configure(conn).get_current_revision()
    finally:
        engine.dispose()
    return current, script.get_current_head()
