"""Periodic ticks: a singleton tick runs once per interval however many workers run."""

from __future__ import annotations

import asyncio
from datetime import timedelta

from sqlalchemy import insert, select
from sqlalchemy.ext.asyncio import AsyncSession

from clarion.config import Settings
from clarion.db import Database
from clarion.kit.clock import Clock
from clarion.models.jobs import WorkerTick
from clarion.worker import Registry
from tests.worker.conftest import count_effects, effects, make_worker


def ticking_registry(*, singleton: bool) -> Registry:
    registry = Registry()

    @registry.tick("tests.every_minute", timedelta(minutes=1), singleton=singleton)
    async def every_minute(session: AsyncSession) -> None:
        await session.execute(insert(effects).values(label="tick"))

    return registry


async def test_a_singleton_tick_runs_once_per_interval_across_two_workers(
    jobs_db: Database, settings: Settings, frozen_clock: Clock
) -> None:
    second_engine = Database(jobs_db.url)  # another worker process would have its own pool
    try:
        registry = ticking_registry(singleton=True)
        a = make_worker(jobs_db, registry, settings, name="worker-a")
        b = make_worker(second_engine, registry, settings, name="worker-b")

        await asyncio.gather(a.run_once(), b.run_once())
        assert await count_effects(jobs_db) == 1

        frozen_clock.advance(timedelta(seconds=30))
        await asyncio.gather(a.run_once(), b.run_once())
        assert await count_effects(jobs_db) == 1

        frozen_clock.advance(timedelta(seconds=31))
        await asyncio.gather(b.run_once(), a.run_once())
        await asyncio.gather(a.run_once(), b.run_once())
        assert await count_effects(jobs_db) == 2
        async with jobs_db.transaction() as session:
            row = await session.get(WorkerTick, "tests.every_minute")
        assert row is not None
        assert row.next_run_at == frozen_clock.now() + timedelta(minutes=1)
        assert row.owner in ("worker-a", "worker-b")
    finally:
        await second_engine.dispose()


async def test_a_local_tick_runs_in_every_worker(jobs_db: Database, settings: Settings, frozen_clock: Clock) -> None:
    registry = ticking_registry(singleton=False)
    a, b = make_worker(jobs_db, registry, settings), make_worker(jobs_db, registry, settings)
    await a.run_once()
    await b.run_once()
    await a.run_once()
    assert await count_effects(jobs_db) == 2
    async with jobs_db.transaction() as session:
        assert (await session.execute(select(WorkerTick))).first() is None


async def test_a_failing_tick_keeps_its_error_and_waits_for_the_next_interval(
    jobs_db: Database, settings: Settings, frozen_clock: Clock
) -> None:
    calls: list[str] = []
    failing = Registry()

    @failing.tick("tests.every_minute", timedelta(minutes=1))
    async def every_minute(session: AsyncSession) -> None:
        calls.append("run")
        await session.execute(insert(effects).values(label="tick"))
        raise ConnectionError("provider unreachable")

    await make_worker(jobs_db, failing, settings).run_once()
    # A fresh worker (no local memory of the schedule) does not retry it within the interval either.
    await make_worker(jobs_db, failing, settings).run_once()
    assert calls == ["run"]
    async with jobs_db.transaction() as session:
        row = await session.get(WorkerTick, "tests.every_minute")
    assert row is not None
    assert "ConnectionError: provider unreachable" in (row.last_error or "")
    assert row.last_started_at == frozen_clock.now()
    # The failed run's writes were rolled back.
    assert await count_effects(jobs_db) == 0

    frozen_clock.advance(timedelta(minutes=1))
    await make_worker(jobs_db, ticking_registry(singleton=True), settings).run_once()
    async with jobs_db.transaction() as session:
        row = await session.get(WorkerTick, "tests.every_minute", populate_existing=True)
    assert row is not None and row.last_error is None
    assert await count_effects(jobs_db) == 1


async def test_singleton_ticks_run_from_the_worker_loop(jobs_db: Database, settings: Settings) -> None:
    worker = make_worker(jobs_db, ticking_registry(singleton=True), settings)
    stop = asyncio.Event()
    running = asyncio.create_task(worker.run(stop))
    for _ in range(200):
        if await count_effects(jobs_db):
            break
        await asyncio.sleep(0.02)
    await asyncio.sleep(0.2)  # several polls later it still ran once: the interval is a minute
    stop.set()
    await asyncio.wait_for(running, 10)
    assert await count_effects(jobs_db) == 1
