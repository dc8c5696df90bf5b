"""Every query on `jobs` and `worker_ticks`. The PostgreSQL / SQLite differences of claiming live here.

Claims are one UPDATE … RETURNING each. On PostgreSQL the rows to take are chosen by a sub-select with
FOR UPDATE SKIP LOCKED, so concurrent workers each take different rows and never wait on each other.
SQLite has no row locks and SQLAlchemy renders no FOR UPDATE there; the single statement runs under the
database's write lock, which serialises concurrent claimers just as well (RETURNING needs SQLite >= 3.35).
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Select, String, case, delete, literal, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from clarion.kit.repository import dialect, dialect_insert
from clarion.models.jobs import Job, WorkerTick

RUNNABLE_STATUSES = ("queued", "failed")
UNFINISHED_STATUSES = ("queued", "running", "failed")
_NO_SYNC = {"synchronize_session": False}


@dataclass(frozen=True)
class ClaimedJob:
    id: int
    name: str
    args: dict[str, Any]
    priority: int
    run_at: datetime
    attempts: int
    max_attempts: int
    tenant_id: uuid.UUID | None


def _skip_locked(session: AsyncSession, stmt: Select[Any]) -> Select[Any]:
    """Row locks that other claimers step over; a no-op on SQLite, where the database lock serialises claims."""
    return stmt.with_for_update(skip_locked=True) if dialect(session) == "postgresql" else stmt


async def insert_job(session: AsyncSession, values: dict[str, Any]) -> int | None:
    """The new job's id, or None when an unfinished job with the same (name, dedupe_key) already exists."""
    stmt = dialect_insert(session, Job).values(**values)
    if values.get("dedupe_key") is not None:
        # The conflict target names the partial unique index, so its WHERE must be repeated verbatim.
        stmt = stmt.on_conflict_do_nothing(
            index_elements=[Job.name, Job.dedupe_key],
            index_where=Job.dedupe_key.is_not(None) & Job.status.in_(UNFINISHED_STATUSES),
        )
    return (await session.execute(stmt.returning(Job.id))).scalar_one_or_none()


async def find_unfinished(session: AsyncSession, name: str, dedupe_key: str) -> int | None:
    stmt = select(Job.id).where(Job.name == name, Job.dedupe_key == dedupe_key,
                                Job.status.in_(UNFINISHED_STATUSES))
    return (await session.execute(stmt)).scalar_one_or_none()


async def get_job(session: AsyncSession, job_id: int) -> Job | None:
    return await session.get(Job, job_id, populate_existing=True)


async def claim_due(session: AsyncSession, *, owner: str, now: datetime, lease_until: datetime,
                    limit: int) -> list[ClaimedJob]:
    """Take up to `limit` due jobs, most urgent first, leased to `owner` until `lease_until`."""
    due = (select(Job.id)
           .where(Job.status.in_(RUNNABLE_STATUSES), Job.run_at <= now)
           .order_by(Job.priority.desc(), Job.run_at, Job.id)
           .limit(limit))
    stmt = (update(Job)
            .where(Job.id.in_(_skip_locked(session, due).scalar_subquery()))
            .values(status="running", attempts=Job.attempts + 1, lease_owner=owner,
                    lease_expires_at=lease_until, updated_at=now)
            .returning(Job.id, Job.name, Job.args, Job.priority, Job.run_at, Job.attempts,
                       Job.max_attempts, Job.tenant_id))
    rows = (await session.execute(stmt, execution_options=_NO_SYNC)).all()
    # RETURNING order is unspecified; hand the jobs out in the order they were chosen.
    claimed = [ClaimedJob(*row) for row in rows]
    claimed.sort(key=lambda j: (-j.priority, j.run_at, j.id))
    return claimed


async def requeue_expired(session: AsyncSession, *, now: datetime) -> int:
    """Jobs whose worker vanished (lease expired) go back to the queue, or to `dead` with no attempts left."""
    expired = select(Job.id).where(Job.status == "running", Job.lease_expires_at < now)
    exhausted = Job.attempts >= Job.max_attempts
    stmt = (update(Job)
            .where(Job.id.in_(_skip_locked(session, expired).scalar_subquery()))
            .values(status=case((exhausted, "dead"), else_="queued"),
                    finished_at=case((exhausted, now), else_=None),
                    last_error=literal("lease expired while held by ", String) + Job.lease_owner,
                    lease_owner=None, lease_expires_at=None, updated_at=now))
    result = await session.execute(stmt, execution_options=_NO_SYNC)
    return int(result.rowcount or 0)


async def lock_for_run(session: AsyncSession, job_id: int, owner: str) -> bool:
    """True while `owner` still holds the job. On PostgreSQL the row stays locked for the job's transaction,
    so a lease reaper (SKIP LOCKED) can never take a job whose worker is alive, however long it runs."""
    stmt = (select(Job.id).where(Job.id == job_id, Job.lease_owner == owner, Job.status == "running")
            .with_for_update())
    return (await session.execute(stmt)).scalar_one_or_none() is not None


async def mark_succeeded(session: AsyncSession, job_id: int, owner: str, *, now: datetime) -> bool:
    """False when the lease was lost meanwhile: the caller must roll back the job's effects."""
    stmt = (update(Job)
            .where(Job.id == job_id, Job.lease_owner == owner, Job.status == "running")
            .values(status="succeeded", finished_at=now, last_error=None, lease_owner=None,
                    lease_expires_at=None, updated_at=now))
    result = await session.execute(stmt, execution_options=_NO_SYNC)
    return bool(result.rowcount)


async def mark_failed(session: AsyncSession, job_id: int, owner: str, *, now: datetime, error: str,
                      retry_at: datetime) -> str | None:
    """`failed` (retried at `retry_at`) or `dead` when attempts are used up; None when the lease was lost."""
    exhausted = Job.attempts >= Job.max_attempts
    stmt = (update(Job)
            .where(Job.id == job_id, Job.lease_owner == owner, Job.status == "running")
            .values(status=case((exhausted, "dead"), else_="failed"),
                    run_at=case((exhausted, Job.run_at), else_=retry_at),
                    finished_at=case((exhausted, now), else_=None),
                    last_error=error, lease_owner=None, lease_expires_at=None, updated_at=now)
            .returning(Job.status))
    return (await session.execute(stmt, execution_options=_NO_SYNC)).scalar_one_or_none()


async def release(session: AsyncSession, owner: str, job_ids: list[int], *, now: datetime) -> int:
    """Hand jobs back unrun (shutdown): queued again, and the claim does not count as an attempt."""
    if not job_ids:
        return 0
    stmt = (update(Job)
            .where(Job.id.in_(job_ids), Job.lease_owner == owner, Job.status == "running")
            .values(status="queued", attempts=Job.attempts - 1, lease_owner=None, lease_expires_at=None,
                    updated_at=now))
    result = await session.execute(stmt, execution_options=_NO_SYNC)
    return int(result.rowcount or 0)


async def prune_succeeded(session: AsyncSession, *, finished_before: datetime) -> int:
    stmt = delete(Job).where(Job.status == "succeeded", Job.finished_at < finished_before)
    result = await session.execute(stmt, execution_options=_NO_SYNC)
    return int(result.rowcount or 0)


# --- singleton ticks ---------------------------------------------------------------------------------------

async def ensure_ticks(session: AsyncSession, names: list[str], *, now: datetime) -> None:
    """A row per singleton tick, due at once when new; existing rows keep their schedule across restarts."""
    if not names:
        return
    stmt = dialect_insert(session, WorkerTick).values([{"name": name, "next_run_at": now} for name in names])
    await session.execute(stmt.on_conflict_do_nothing(index_elements=[WorkerTick.name]))


async def claim_tick(session: AsyncSession, name: str, owner: str, *, now: datetime,
                     next_run_at: datetime) -> bool:
    """Move a due tick's next_run_at forward; only the worker whose UPDATE matched runs this interval.

    A worker that finds the row locked (another is mid-claim or mid-run on PostgreSQL) skips it rather than wait.
    """
    due = select(WorkerTick.name).where(WorkerTick.name == name, WorkerTick.next_run_at <= now)
    stmt = (update(WorkerTick)
            .where(WorkerTick.name.in_(_skip_locked(session, due).scalar_subquery()))
            .values(next_run_at=next_run_at, owner=owner, last_started_at=now)
            .returning(WorkerTick.name))
    return (await session.execute(stmt, execution_options=_NO_SYNC)).scalar_one_or_none() is not None


async def tick_next_run_at(session: AsyncSession, name: str) -> datetime | None:
    stmt = select(WorkerTick.next_run_at).where(WorkerTick.name == name)
    return (await session.execute(stmt)).scalar_one_or_none()


async def record_tick_error(session: AsyncSession, name: str, error: str | None) -> None:
    stmt = update(WorkerTick).where(WorkerTick.name == name).values(last_error=error)
    await session.execute(stmt, execution_options=_NO_SYNC)
