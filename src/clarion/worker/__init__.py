"""The job runner: a durable job table, leases, retries with backoff, periodic ticks, jobs by name.

Bottom layer (with kit/db/config/models): it imports no domain. Domains register with it:

    from clarion.worker import enqueue, job, register_tick

    @job("delivery.send_webhook", max_attempts=8)
    async def send_webhook(session, args): ...          # flushes, never commits

    register_tick("campaign.dispatch_due", 5, dispatch_due)   # async def dispatch_due(session)

    register_loop("delivery.dispatch", dispatch_loop)    # async def dispatch_loop(database, settings, stop)

    await enqueue(session, "delivery.send_webhook", {"id": str(hook.id)}, dedupe_key=f"hook:{hook.id}")
"""

from clarion.worker import maintenance as _maintenance  # noqa: F401 - registers the worker's own ticks
from clarion.worker.queue import backoff_delay, enqueue, get_job
from clarion.worker.registry import (
    DEFAULT_MAX_ATTEMPTS,
    JobSpec,
    LoopSpec,
    Registry,
    TickSpec,
    job,
    register_job,
    register_loop,
    register_tick,
    registry,
    tick,
)
from clarion.worker.runner import Worker

__all__ = ["DEFAULT_MAX_ATTEMPTS", "JobSpec", "LoopSpec", "Registry", "TickSpec", "Worker", "backoff_delay",
           "enqueue", "get_job", "job", "register_job", "register_loop", "register_tick", "registry", "tick"]
