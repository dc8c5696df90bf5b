"""The running Worker: graceful shutdown, two workers draining one queue, embedded in the app's lifespan."""

from __future__ import annotations

import asyncio
from typing import Any

from sqlalchemy import func, insert, select
from sqlalchemy.ext.asyncio import AsyncSession

from clarion.app import create_app
from clarion.config import Settings
from clarion.db import Database
from clarion.models.jobs import Job
from clarion.worker import Registry, enqueue, get_job, register_job
from tests.worker.conftest import effect_labels, effects, make_worker


async def wait_for(predicate: Any, timeout: float = 20.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not await predicate():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {predicate.__name__}")
        await asyncio.sleep(0.02)


async def job_status(db: Database, job_id: int) -> str:
    async with db.transaction() as session:
        job = await get_job(session, job_id)
    assert job is not None
    return job.status


def slow_registry(seconds: float) -> Registry:
    registry = Registry()

    @registry.job("tests.slow")
    async def slow(session: AsyncSession, args: dict[str, Any]) -> None:
        await asyncio.sleep(seconds)
        await session.execute(insert(effects).values(label="slow done"))

    return registry


async def test_stop_lets_an_inflight_job_finish(jobs_db: Database, settings: Settings) -> None:
    async with jobs_db.transaction() as session:
        job_id = await enqueue(session, "tests.slow", {})
    worker = make_worker(jobs_db, slow_registry(0.3), settings, shutdown_grace_seconds=10)
    stop = asyncio.Event()
    running = asyncio.create_task(worker.run(stop))

    async def started() -> bool:
        return await job_status(jobs_db, job_id) == "running"

    await wait_for(started)
    stop.set()
    await asyncio.wait_for(running, 10)
    assert await job_status(jobs_db, job_id) == "succeeded"
    assert await effect_labels(jobs_db) == ["slow done"]


async def test_stop_past_the_grace_period_hands_the_job_back_unspent(jobs_db: Database, settings: Settings) -> None:
    async with jobs_db.transaction() as session:
        job_id = await enqueue(session, "tests.slow", {})
    worker = make_worker(jobs_db, slow_registry(60), settings, shutdown_grace_seconds=0.1)
    stop = asyncio.Event()
    running = asyncio.create_task(worker.run(stop))

    async def started() -> bool:
        return await job_status(jobs_db, job_id) == "running"

    await wait_for(started)
    stop.set()
    await asyncio.wait_for(running, 10)
    async with jobs_db.transaction() as session:
        job = await get_job(session, job_id)
    assert job is not None
    assert (job.status, job.attempts, job.lease_owner) == ("queued", 0, None)
    assert await effect_labels(jobs_db) == []


async def test_two_workers_run_500_jobs_exactly_once(jobs_db: Database, settings: Settings) -> None:
    """On PostgreSQL the SKIP LOCKED claims race for real; on SQLite the database lock serialises them."""
    databases = [jobs_db, Database(jobs_db.url)]  # two engines: two pools, as two processes would have
    try:
        workers = []
        for letter, db in zip("ab", databases, strict=True):
            registry = Registry()

            async def count_run(session: AsyncSession, args: dict[str, Any], letter: str = letter) -> None:
                await asyncio.sleep(0.001)
                await session.execute(insert(effects).values(label=str(args["n"]), worker=letter))

            registry.register_job("tests.count", count_run)
            workers.append(make_worker(db, registry, settings, concurrency=8, name=f"worker-{letter}"))
        async with jobs_db.transaction() as session:
            for n in range(500):
                await enqueue(session, "tests.count", {"n": n})

        stop = asyncio.Event()
        runs = [asyncio.create_task(w.run(stop)) for w in workers]

        async def all_finished() -> bool:
            async with jobs_db.transaction() as session:
                open_jobs = select(func.count()).select_from(Job).where(Job.status != "succeeded")
                return (await session.execute(open_jobs)).scalar_one() == 0

        await wait_for(all_finished, timeout=90)
        stop.set()
        await asyncio.wait_for(asyncio.gather(*runs), 20)

        async with jobs_db.transaction() as session:
            rows = (await session.execute(select(effects.c.label, effects.c.worker))).all()
        assert len(rows) == 500
        assert sorted(int(label) for label, _ in rows) == list(range(500))
        by_worker = {w: sum(1 for _, who in rows if who == w) for w in "ab"}
        assert by_worker["a"] > 0 and by_worker["b"] > 0, by_worker
        assert sum(w.jobs_run for w in workers) == 500
    finally:
        await databases[1].dispose()


async def _embedded_marker(session: AsyncSession, args: dict[str, Any]) -> None:
    await session.execute(insert(effects).values(label=args["label"]))


# The embedded worker serves the process-wide registry, as a domain's tasks.py would fill it.
register_job("tests.worker.embedded_marker", _embedded_marker)


async def test_embedded_worker_starts_and_stops_with_the_app_lifespan(jobs_db: Database, settings: Settings) -> None:
    app = create_app(settings.model_copy(update={"worker_poll_interval": 0.05}), database=jobs_db,
                     embedded_worker=True)

    async def marker_written() -> bool:
        return await effect_labels(jobs_db) == ["while serving"]

    async with app.router.lifespan_context(app):
        assert any(t.get_name() == "clarion-worker" for t in asyncio.all_tasks())
        async with jobs_db.transaction() as session:
            await enqueue(session, "tests.worker.embedded_marker", {"label": "while serving"})
        await wait_for(marker_written)

    assert not any(t.get_name() == "clarion-worker" for t in asyncio.all_tasks())
    async with jobs_db.transaction() as session:
        after_id = await enqueue(session, "tests.worker.embedded_marker", {"label": "after shutdown"})
    await asyncio.sleep(0.3)
    assert await job_status(jobs_db, after_id) == "queued"
    assert await effect_labels(jobs_db) == ["while serving"]


async def test_the_app_runs_no_worker_unless_asked(jobs_db: Database, settings: Settings) -> None:
    app = create_app(settings, database=jobs_db)
    async with app.router.lifespan_context(app):
        assert not any(t.get_name() == "clarion-worker" for t in asyncio.all_tasks())
        assert not hasattr(app.state, "worker")
