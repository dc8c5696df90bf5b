"""Putting work on the queue, from inside whatever transaction the caller owns."""

from __future__ import annotations

import json
import random
import uuid
from datetime import datetime, timedelta
from typing import Any

from pydantic_core import to_jsonable_python
from sqlalchemy.ext.asyncio import AsyncSession

from clarion.kit.clock import utcnow
from clarion.models.jobs import Job
from clarion.worker import repository
from clarion.worker.registry import DEFAULT_MAX_ATTEMPTS, Registry
from clarion.worker.registry import registry as default_registry


async def enqueue(
    session: AsyncSession,
    name: str,
    args: dict[str, Any] | None = None,
    *,
    run_at: datetime | None = None,
    priority: int = 0,
    max_attempts: int | None = None,
    dedupe_key: str | None = None,
    tenant_id: uuid.UUID | None = None,
    registry: Registry | None = None,
) -> int:
    """Queue job `name` and return its id. Commits with the caller's transaction, never on its own.

    Args are stored as JSON: UUIDs, datetimes and Pydantic models arrive at the job as their JSON form.
    With a `dedupe_key`, while an unfinished job of that name and key exists its id is returned instead
    of queueing a second one. `max_attempts` defaults to what the job was registered with.
    """
    try:
        payload = to_jsonable_python(args or {})
        json.dumps(payload)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"job {name!r}: args must be JSON-serialisable ({exc})") from exc
    if not isinstance(payload, dict):
        raise TypeError(f"job {name!r}: args must be a JSON object")
    if max_attempts is None:
        spec = (registry or default_registry).jobs.get(name)
        max_attempts = spec.max_attempts if spec else DEFAULT_MAX_ATTEMPTS
    if max_attempts < 1:
        raise ValueError("max_attempts must be at least 1")
    now = utcnow()
    values = {"name": name, "args": payload, "priority": priority, "run_at": run_at or now,
              "status": "queued", "attempts": 0, "max_attempts": max_attempts, "dedupe_key": dedupe_key,
              "tenant_id": tenant_id, "created_at": now, "updated_at": now}
    # Pending ORM changes (the tenant row this job points at, say) must reach the database first.
    await session.flush()
    while True:
        job_id = await repository.insert_job(session, values)
        if job_id is not None:
            return job_id
        assert dedupe_key is not None  # only a dedupe conflict makes the insert a no-op
        existing = await repository.find_unfinished(session, name, dedupe_key)
        if existing is not None:
            return existing
        # The conflicting job finished between the two statements: the key is free again, so insert anew.


async def get_job(session: AsyncSession, job_id: int) -> Job | None:
    """The job row as stored now (status, attempts, last_error …)."""
    return await repository.get_job(session, job_id)


def backoff_delay(attempts: int, *, base: float, cap: float, rng: random.Random | None = None) -> timedelta:
    """Delay before retrying after the `attempts`-th failure: exponential, capped, then jittered
    into [delay/2, delay] so jobs that failed together (a provider outage) do not all retry together."""
    exponent = min(max(attempts - 1, 0), 62)  # 2**62 seconds is already far past any cap
    delay = min(cap, base * (2 ** exponent))
    return timedelta(seconds=delay * (rng or random).uniform(0.5, 1.0))
