"""Worker fixtures: a clean queue per test, a test-only table for job effects, a frozen clock."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime

import pytest
from sqlalchemy import Column, Integer, MetaData, String, Table, delete, func, select

from clarion.config import Settings
from clarion.db import Database
from clarion.kit.clock import Clock, clock
from clarion.models.jobs import Job, WorkerTick
from clarion.worker import Registry, Worker

# Not part of the schema: jobs under test write here, so "its effects committed" is a row we can count.
test_metadata = MetaData()
effects = Table(
    "worker_test_effects", test_metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("label", String(100), nullable=False),
    Column("worker", String(200)),
)


async def reset_queue(db: Database) -> None:
    async with db.engine.begin() as conn:
        await conn.run_sync(test_metadata.create_all)
    async with db.transaction() as session:
        for table in (effects, Job.__table__, WorkerTick.__table__):
            await session.execute(delete(table))


@pytest.fixture
async def jobs_db(db: Database) -> AsyncIterator[Database]:
    """The per-backend database with no jobs, ticks or effects left by earlier tests."""
    await reset_queue(db)
    yield db
    await reset_queue(db)


@pytest.fixture
def frozen_clock() -> Iterator[Clock]:
    clock.freeze(datetime.now(UTC).replace(microsecond=0))
    yield clock
    clock.reset()


def make_worker(db: Database, registry: Registry, settings: Settings, **kwargs: object) -> Worker:
    kwargs.setdefault("poll_interval", 0.02)
    return Worker(db, registry=registry, settings=settings, **kwargs)  # type: ignore[arg-type]


async def effect_labels(db: Database) -> list[str]:
    async with db.transaction() as session:
        return list((await session.execute(select(effects.c.label).order_by(effects.c.id))).scalars())


async def count_effects(db: Database) -> int:
    async with db.transaction() as session:
        return int((await session.execute(select(func.count()).select_from(effects))).scalar_one())
