"""Jobs on both databases: effects commit with success, retries with backoff, dedupe, priority, leases."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import insert, select
from sqlalchemy.ext.asyncio import AsyncSession

from clarion.config import Settings
from clarion.db import Database
from clarion.kit.clock import Clock
from clarion.models.jobs import Job
from clarion.worker import Registry, enqueue, get_job, repository
from tests.conftest import make_tenant
from tests.worker.conftest import count_effects, effect_labels, effects, make_worker


def recording_registry() -> Registry:
    registry = Registry()

    @registry.job("tests.record")
    async def record(session: AsyncSession, args: dict[str, Any]) -> None:
        await session.execute(insert(effects).values(label=args["label"]))

    @registry.job("tests.record_then_fail")
    async def record_then_fail(session: AsyncSession, args: dict[str, Any]) -> None:
        await session.execute(insert(effects).values(label="half-done"))
        raise RuntimeError("smtp server down")

    return registry


async def job_row(db: Database, job_id: int) -> Job:
    async with db.transaction() as session:
        found = await get_job(session, job_id)
    assert found is not None
    return found


async def test_job_effects_commit_with_its_success(jobs_db: Database, settings: Settings) -> None:
    tenant = await make_tenant(jobs_db)
    async with jobs_db.transaction() as session:
        job_id = await enqueue(session, "tests.record", {"label": "welcome"}, tenant_id=tenant.id)
    worker = make_worker(jobs_db, recording_registry(), settings)

    assert await worker.run_once() == 1

    assert await effect_labels(jobs_db) == ["welcome"]
    job = await job_row(jobs_db, job_id)
    assert (job.status, job.attempts, job.lease_owner, job.tenant_id) == ("succeeded", 1, None, tenant.id)
    assert job.finished_at is not None
    assert await worker.run_once() == 0


async def test_enqueue_rolls_back_with_the_callers_transaction(jobs_db: Database, settings: Settings) -> None:
    try:
        async with jobs_db.transaction() as session:
            await enqueue(session, "tests.record", {"label": "never"})
            raise LookupError("the request failed after queueing")
    except LookupError:
        pass
    assert await make_worker(jobs_db, recording_registry(), settings).run_once() == 0
    assert await effect_labels(jobs_db) == []


async def test_failing_job_retries_with_backoff_then_is_dead_with_its_error(
    jobs_db: Database, settings: Settings, frozen_clock: Clock
) -> None:
    base = settings.job_backoff_base_seconds
    async with jobs_db.transaction() as session:
        job_id = await enqueue(session, "tests.record_then_fail", {}, max_attempts=3)
    worker = make_worker(jobs_db, recording_registry(), settings)

    assert await worker.run_once() == 1
    job = await job_row(jobs_db, job_id)
    assert (job.status, job.attempts) == ("failed", 1)
    assert frozen_clock.now() + timedelta(seconds=base / 2) <= job.run_at <= frozen_clock.now() + timedelta(seconds=base)
    assert "smtp server down" in (job.last_error or "")
    # The attempt's writes were rolled back with it.
    assert await count_effects(jobs_db) == 0
    # Not due yet: nothing runs until the backoff has passed.
    assert await worker.run_once() == 0

    frozen_clock.advance(timedelta(seconds=base))
    assert await worker.run_once() == 1
    job = await job_row(jobs_db, job_id)
    assert (job.status, job.attempts) == ("failed", 2)
    # The second delay doubles.
    assert frozen_clock.now() + timedelta(seconds=base) <= job.run_at <= frozen_clock.now() + timedelta(seconds=2 * base)

    frozen_clock.advance(timedelta(seconds=2 * base))
    assert await worker.run_once() == 1
    job = await job_row(jobs_db, job_id)
    assert (job.status, job.attempts) == ("dead", 3)
    assert "RuntimeError: smtp server down" in (job.last_error or "")
    assert job.finished_at == frozen_clock.now()

    frozen_clock.advance(timedelta(days=1))
    assert await worker.run_once() == 0
    assert await count_effects(jobs_db) == 0


async def test_a_job_nobody_registered_dies_with_the_reason(jobs_db: Database, settings: Settings) -> None:
    async with jobs_db.transaction() as session:
        job_id = await enqueue(session, "tests.no_such_job", {}, max_attempts=1)
    assert await make_worker(jobs_db, recording_registry(), settings).run_once() == 1
    job = await job_row(jobs_db, job_id)
    assert job.status == "dead"
    assert "no job is registered under 'tests.no_such_job'" in (job.last_error or "")


async def test_dedupe_key_makes_a_second_enqueue_harmless(jobs_db: Database, settings: Settings) -> None:
    async with jobs_db.transaction() as session:
        first = await enqueue(session, "tests.record", {"label": "once"}, dedupe_key="contact:42")
        again = await enqueue(session, "tests.record", {"label": "twice"}, dedupe_key="contact:42")
        other_name = await enqueue(session, "tests.other", {}, dedupe_key="contact:42")
    async with jobs_db.transaction() as session:
        later = await enqueue(session, "tests.record", {"label": "thrice"}, dedupe_key="contact:42")
    assert first == again == later
    assert other_name != first

    worker = make_worker(jobs_db, recording_registry(), settings, concurrency=1)
    await worker.run_once()
    await worker.run_once()
    assert await effect_labels(jobs_db) == ["once"]
    # Once the job is finished the key is free: the same logical job can be queued again.
    async with jobs_db.transaction() as session:
        after_finish = await enqueue(session, "tests.record", {"label": "next day"}, dedupe_key="contact:42")
    assert after_finish != first


async def test_jobs_run_by_priority_then_run_at(jobs_db: Database, settings: Settings, frozen_clock: Clock) -> None:
    now = frozen_clock.now()
    async with jobs_db.transaction() as session:
        for label, priority, age in (("low-old", 0, 3), ("high-new", 10, 1), ("low-new", 0, 2),
                                     ("high-old", 10, 2), ("future", 99, -5)):
            await enqueue(session, "tests.record", {"label": label}, priority=priority,
                          run_at=now - timedelta(seconds=age))
    worker = make_worker(jobs_db, recording_registry(), settings, concurrency=1)
    while await worker.run_once():
        pass
    assert await effect_labels(jobs_db) == ["high-old", "high-new", "low-old", "low-new"]


async def test_an_expired_lease_is_reclaimed_by_another_worker(
    jobs_db: Database, settings: Settings, frozen_clock: Clock
) -> None:
    async with jobs_db.transaction() as session:
        job_id = await enqueue(session, "tests.record", {"label": "survivor"})
    # A worker claims the job and dies before running it: exactly the state a crash leaves behind.
    now = frozen_clock.now()
    async with jobs_db.transaction() as session:
        claimed = await repository.claim_due(session, owner="crashed-worker", now=now,
                                             lease_until=now + timedelta(seconds=60), limit=10)
    assert [j.id for j in claimed] == [job_id]

    other = make_worker(jobs_db, recording_registry(), settings, lease_seconds=60)
    assert await other.run_once() == 0  # the lease still holds

    frozen_clock.advance(timedelta(seconds=61))
    assert await other.run_once() == 1
    job = await job_row(jobs_db, job_id)
    assert (job.status, job.attempts) == ("succeeded", 2)
    assert await effect_labels(jobs_db) == ["survivor"]


async def test_an_expired_lease_on_the_last_attempt_makes_the_job_dead(
    jobs_db: Database, settings: Settings, frozen_clock: Clock
) -> None:
    async with jobs_db.transaction() as session:
        job_id = await enqueue(session, "tests.record", {"label": "x"}, max_attempts=1)
    now = frozen_clock.now()
    async with jobs_db.transaction() as session:
        await repository.claim_due(session, owner="crashed-worker", now=now,
                                   lease_until=now + timedelta(seconds=5), limit=1)
    frozen_clock.advance(timedelta(seconds=6))
    assert await make_worker(jobs_db, recording_registry(), settings).run_once() == 0
    job = await job_row(jobs_db, job_id)
    assert job.status == "dead"
    assert job.last_error == "lease expired while held by crashed-worker"
    assert await count_effects(jobs_db) == 0


async def test_a_worker_that_lost_its_lease_does_not_commit_the_jobs_effects(
    jobs_db: Database, settings: Settings, frozen_clock: Clock
) -> None:
    registry = recording_registry()
    async with jobs_db.transaction() as session:
        job_id = await enqueue(session, "tests.record", {"label": "once only"})
    slow = make_worker(jobs_db, registry, settings, lease_seconds=10)
    now = frozen_clock.now()
    async with jobs_db.transaction() as session:
        [claimed] = await repository.claim_due(session, owner=slow.id, now=now,
                                               lease_until=now + timedelta(seconds=10), limit=1)
    # While `slow` stalls past its lease, another worker reclaims the job and finishes it.
    frozen_clock.advance(timedelta(seconds=11))
    assert await make_worker(jobs_db, registry, settings).run_once() == 1
    # `slow` wakes up and runs its stale claim: nothing of it may be committed.
    await slow._execute(claimed)
    assert await effect_labels(jobs_db) == ["once only"]
    assert (await job_row(jobs_db, job_id)).status == "succeeded"


async def test_enqueue_refuses_args_that_are_not_json(jobs_db: Database) -> None:
    async with jobs_db.transaction() as session:
        with pytest.raises(ValueError, match="JSON"):
            await enqueue(session, "tests.record", {"label": object()})
        assert (await session.execute(select(Job.id))).first() is None
