"""The migrations create what the models describe, on both databases; the event log's partitioning migration
(0004, PostgreSQL) keeps every event across upgrade and downgrade."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import create_engine, text

import clarion.models  # noqa: F401 - registers every table
from clarion.campaign import sending
from clarion.campaign import service as campaigns
from clarion.campaign.schemas import CampaignCreate
from clarion.campaign.sending import EventInput
from clarion.config import to_sync_url
from clarion.db import Database
from clarion.migrate import alembic_config, include_name, upgrade
from clarion.models.base import Base
from tests.conftest import BACKENDS, make_tenant, own_pg_database


def schema_differences(url: str) -> list[object]:
    engine = create_engine(to_sync_url(url))
    try:
        with engine.connect() as conn:
            context = MigrationContext.configure(conn, opts={"compare_type": True, "include_name": include_name})
            return list(compare_metadata(context, Base.metadata))
    finally:
        engine.dispose()


@pytest.fixture
def fresh_sqlite_url(tmp_path: Path) -> str:
    return f"sqlite+aiosqlite:///{tmp_path / 'fresh.db'}"


@pytest.fixture
def fresh_pg_url(pg_url: str) -> Iterator[str]:
    """An empty PostgreSQL database of its own (pg_url proves a server is there), dropped afterwards."""
    with own_pg_database("clarion_migrations") as url:
        yield url


@pytest.mark.parametrize("backend", BACKENDS)
def test_the_migrated_schema_is_what_the_models_describe(backend: str, request: pytest.FixtureRequest) -> None:
    # A database of its own: tests may add tables of their own to the shared one.
    url = request.getfixturevalue("fresh_pg_url" if backend == "postgres" else "fresh_sqlite_url")
    upgrade(url)
    assert schema_differences(url) == []


MOMENTS = [datetime(2024, 11, 30, 23, 59, tzinfo=UTC), datetime(2024, 12, 1, tzinfo=UTC),
           datetime(2025, 2, 14, 9, 30, tzinfo=UTC)]


async def _events(db: Database) -> list[tuple[object, ...]]:
    async with db.transaction() as session:
        rows = await session.execute(text("SELECT id, campaign_id, type, occurred_at, metadata FROM campaign_events "
                                          "ORDER BY id"))
        return [tuple(row) for row in rows.all()]


async def _record(db: Database, tenant_id: uuid.UUID, campaign_id: uuid.UUID, *moments: datetime) -> None:
    async with db.transaction() as session:
        await sending.record_events(session, [EventInput(tenant_id, campaign_id, None, "delivered", at, {"n": i})
                                              for i, at in enumerate(moments)])


async def _layout(db: Database) -> tuple[str, list[str], list[str]]:
    """(relkind of campaign_events, its primary key columns, its partitions)."""
    async with db.transaction() as session:
        kind = (await session.execute(text("SELECT relkind FROM pg_class WHERE oid = 'campaign_events'::regclass")
                                      )).scalar_one()
        key = (await session.execute(text(
            "SELECT array_agg(a.attname ORDER BY a.attname) FROM pg_index i JOIN pg_attribute a "
            "ON a.attrelid = i.indrelid AND a.attnum = ANY(i.indkey) "
            "WHERE i.indrelid = 'campaign_events'::regclass AND i.indisprimary"))).scalar_one()
        parts = (await session.execute(text("SELECT inhrelid::regclass::text FROM pg_inherits "
                                            "WHERE inhparent = 'campaign_events'::regclass ORDER BY 1"))).scalars()
        return str(kind), list(key), list(parts)


async def test_partitioning_the_event_log_and_back_keeps_every_event(fresh_pg_url: str) -> None:
    upgrade(fresh_pg_url, "0003")
    db = Database(fresh_pg_url)
    try:
        tenant = await make_tenant(db, "Migrating")
        async with db.transaction() as session:
            campaign = await campaigns.create_campaign(session, tenant.id, CampaignCreate(name="Old", channel="email"))
        await _record(db, tenant.id, campaign.id, *MOMENTS)
        before = await _events(db)
        assert (await _layout(db))[:2] == ("r", ["id"])

        upgrade(fresh_pg_url, "0004")
        await db.engine.dispose()  # cached plans and type info name the old table
        assert await _layout(db) == ("p", ["id", "occurred_at"],
                                     ["campaign_events_default", "campaign_events_y2024m11",
                                      "campaign_events_y2024m12", "campaign_events_y2025m02"])
        assert await _events(db) == before
        await _record(db, tenant.id, campaign.id, datetime(2030, 1, 1, tzinfo=UTC))  # DEFAULT takes it
        after_upgrade = await _events(db)
        assert after_upgrade[:-1] == before and after_upgrade[-1][0] > before[-1][0]  # the id sequence carried on

        command.downgrade(alembic_config(fresh_pg_url), "0003")
        await db.engine.dispose()
        assert await _layout(db) == ("r", ["id"], [])
        assert await _events(db) == after_upgrade
        await _record(db, tenant.id, campaign.id, datetime(2030, 2, 1, tzinfo=UTC))
        assert (await _events(db))[-1][0] > after_upgrade[-1][0]

        upgrade(fresh_pg_url)
        await db.engine.dispose()
        assert (await _layout(db))[:2] == ("p", ["id", "occurred_at"])
        assert len(await _events(db)) == len(MOMENTS) + 2
        assert schema_differences(fresh_pg_url) == []
    finally:
        await db.dispose()
