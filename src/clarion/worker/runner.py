"""The Worker: claims due jobs under a lease, runs each in its own transaction, runs periodic ticks.

A job's function and the job's `succeeded` mark commit in one transaction, so its effects are either all
there (and the job is done) or not at all (and the job is retried). A job whose lease was lost meanwhile
(another worker took it over) is rolled back rather than committed a second time.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
import socket
import time
import traceback
from datetime import datetime, timedelta

from clarion.config import Settings, get_settings
from clarion.db import Database
from clarion.kit.clock import utcnow
from clarion.worker import repository
from clarion.worker.queue import backoff_delay
from clarion.worker.registry import JobSpec, LoopSpec, Registry, TickSpec
from clarion.worker.registry import registry as default_registry
from clarion.worker.repository import ClaimedJob

logger = logging.getLogger("clarion.worker")
MAX_ERROR_CHARS = 4000


class LeaseLost(Exception):
    """Raised inside a job's transaction to roll back its effects: another worker owns the job now."""


class Worker:
    def __init__(
        self,
        database: Database,
        *,
        registry: Registry | None = None,
        settings: Settings | None = None,
        concurrency: int | None = None,
        poll_interval: float | None = None,
        lease_seconds: float | None = None,
        shutdown_grace_seconds: float | None = None,
        name: str | None = None,
    ) -> None:
        settings = settings or get_settings()
        self.db = database
        self.registry = registry or default_registry
        self.settings = settings
        self.concurrency = max(1, concurrency if concurrency is not None else settings.worker_concurrency)
        self.poll_interval = poll_interval if poll_interval is not None else settings.worker_poll_interval
        self.lease = timedelta(seconds=lease_seconds if lease_seconds is not None else settings.job_lease_seconds)
        self.shutdown_grace = (shutdown_grace_seconds if shutdown_grace_seconds is not None
                               else settings.worker_shutdown_grace_seconds)
        # Unique per process and start: a restarted worker must not mistake its predecessor's leases for its own.
        self.id = name or f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(3)}"
        self._inflight: dict[int, asyncio.Task[None]] = {}
        self._slot_freed = asyncio.Event()
        self._local_ticks_due: dict[str, datetime] = {}
        self._singleton_next_check: dict[str, datetime | None] = {}
        # Reaping expired leases is a write; in the loop it runs this often, not on every poll.
        self._reap_every = max(self.poll_interval, min(self.lease.total_seconds() / 4, 30.0))
        self._next_reap = 0.0
        self.jobs_run = 0

    # --- lifecycle ---------------------------------------------------------------------------------------

    async def run(self, stop: asyncio.Event) -> None:
        """Work until `stop` is set, then let in-flight jobs finish (up to the grace period) or hand them back."""
        logger.info("worker %s started: concurrency=%d, jobs=%s, ticks=%s, loops=%s", self.id, self.concurrency,
                    sorted(self.registry.jobs), sorted(self.registry.ticks), sorted(self.registry.loops))
        try:
            await asyncio.gather(self._job_loop(stop), self._tick_loop(stop),
                                 *(self._domain_loop(spec, stop) for spec in self.registry.loops.values()))
        finally:
            await self._drain()
            logger.info("worker %s stopped after %d jobs", self.id, self.jobs_run)

    async def run_once(self) -> int:
        """One pass without waiting: due ticks, expired leases, then up to `concurrency` due jobs, run to the end.
        For cron-driven deployments and tests; returns how many jobs ran."""
        await self._ensure_tick_rows()
        await self._run_due_ticks()
        await self._requeue_expired()
        started = await self._claim_and_start(self.concurrency)
        if self._inflight:
            await asyncio.gather(*self._inflight.values(), return_exceptions=True)
        return started

    # --- jobs ----------------------------------------------------------------------------------------------

    async def _job_loop(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            started = 0
            # Cleared before claiming, so a job that ends while we claim still wakes the wait below.
            self._slot_freed.clear()
            try:
                if time.monotonic() >= self._next_reap:
                    self._next_reap = time.monotonic() + self._reap_every
                    await self._requeue_expired()
                free = self.concurrency - len(self._inflight)
                if free > 0:
                    started = await self._claim_and_start(free)
            except Exception:
                # The database may be restarting; the loop must outlive it.
                logger.exception("worker %s: claiming jobs failed; retrying in %.1fs", self.id, self.poll_interval)
            # Claim again at once while work keeps coming and slots are free; otherwise wait for a slot or a poll.
            if started and len(self._inflight) < self.concurrency:
                continue
            await _wait_any(stop, self._slot_freed, timeout=self.poll_interval)

    async def _requeue_expired(self) -> None:
        async with self.db.transaction() as session:
            count = await repository.requeue_expired(session, now=utcnow())
        if count:
            logger.warning("worker %s: %d job(s) whose lease expired were put back on the queue", self.id, count)

    async def _claim_and_start(self, limit: int) -> int:
        now = utcnow()
        async with self.db.transaction() as session:
            claimed = await repository.claim_due(session, owner=self.id, now=now, lease_until=now + self.lease,
                                                 limit=limit)
        for job in claimed:
            task = asyncio.create_task(self._execute(job), name=f"job-{job.id}-{job.name}")
            self._inflight[job.id] = task
            task.add_done_callback(lambda _t, job_id=job.id: self._job_done(job_id))
        return len(claimed)

    def _job_done(self, job_id: int) -> None:
        self._inflight.pop(job_id, None)
        self.jobs_run += 1
        self._slot_freed.set()

    async def _execute(self, job: ClaimedJob) -> None:
        spec = self.registry.jobs.get(job.name)
        if spec is None:
            await self._record_failure(job, f"no job is registered under {job.name!r} in this worker")
            return
        try:
            await self._run_in_transaction(spec, job)
        except LeaseLost:
            logger.warning("job %d (%s): lease lost to another worker; this run's effects were rolled back",
                           job.id, job.name)
        except asyncio.CancelledError:
            raise  # shutdown past the grace period: _drain hands the job back
        except Exception as exc:  # noqa: BLE001 - whatever a job raises is recorded and retried
            error = "".join(traceback.format_exception(exc))[-MAX_ERROR_CHARS:]
            await self._record_failure(job, error)
        else:
            logger.info("job %d (%s) succeeded on attempt %d", job.id, job.name, job.attempts)

    async def _run_in_transaction(self, spec: JobSpec, job: ClaimedJob) -> None:
        async with self.db.transaction() as session:
            if not await repository.lock_for_run(session, job.id, self.id):
                raise LeaseLost
            await spec.fn(session, job.args)
            await session.flush()
            if not await repository.mark_succeeded(session, job.id, self.id, now=utcnow()):
                raise LeaseLost

    async def _record_failure(self, job: ClaimedJob, error: str) -> None:
        now = utcnow()
        retry_at = now + backoff_delay(job.attempts, base=self.settings.job_backoff_base_seconds,
                                       cap=self.settings.job_backoff_max_seconds)
        try:
            async with self.db.transaction() as session:
                status = await repository.mark_failed(session, job.id, self.id, now=now, error=error,
                                                      retry_at=retry_at)
        except Exception:
            # The lease will expire and the reaper requeues the job; the attempt still counts.
            logger.exception("job %d (%s): could not record its failure", job.id, job.name)
            return
        last_line = error.strip().splitlines()[-1] if error.strip() else error
        if status == "dead":
            logger.error("job %d (%s) is dead after %d attempts: %s", job.id, job.name, job.attempts, last_line)
        elif status == "failed":
            logger.warning("job %d (%s) failed attempt %d/%d, retry at %s: %s", job.id, job.name, job.attempts,
                           job.max_attempts, retry_at.isoformat(), last_line)

    async def _drain(self) -> None:
        if not self._inflight:
            return
        tasks = dict(self._inflight)
        logger.info("worker %s: waiting up to %.0fs for %d in-flight job(s)", self.id, self.shutdown_grace,
                    len(tasks))
        _done, pending = await asyncio.wait(tasks.values(), timeout=self.shutdown_grace)
        if not pending:
            return
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
        unfinished = [job_id for job_id, task in tasks.items() if task in pending]
        try:
            async with self.db.transaction() as session:
                released = await repository.release(session, self.id, unfinished, now=utcnow())
            logger.warning("worker %s: handed %d unfinished job(s) back to the queue", self.id, released)
        except Exception:
            logger.exception("worker %s: could not hand jobs back; their leases will expire", self.id)

    # --- domain loops --------------------------------------------------------------------------------------

    async def _domain_loop(self, spec: LoopSpec, stop: asyncio.Event) -> None:
        """Run a registered loop until `stop`; one that raises (a database restart) is started again."""
        while not stop.is_set():
            try:
                await spec.fn(self.db, self.settings, stop)
            except Exception:
                logger.exception("worker %s: loop %s failed; restarting in %.1fs", self.id, spec.name,
                                 self.poll_interval)
                await _wait_any(stop, timeout=self.poll_interval)

    # --- ticks ---------------------------------------------------------------------------------------------

    async def _ensure_tick_rows(self) -> None:
        names = [t.name for t in self.registry.ticks.values() if t.singleton]
        if names:
            async with self.db.transaction() as session:
                await repository.ensure_ticks(session, names, now=utcnow())

    async def _tick_loop(self, stop: asyncio.Event) -> None:
        rows_ready = False
        while not stop.is_set():
            try:
                if not rows_ready:
                    await self._ensure_tick_rows()
                    rows_ready = True
                await self._run_due_ticks(stop)
            except Exception:
                logger.exception("worker %s: running ticks failed", self.id)
            await _wait_any(stop, timeout=self.poll_interval)

    async def _run_due_ticks(self, stop: asyncio.Event | None = None) -> None:
        for spec in list(self.registry.ticks.values()):
            if stop is not None and stop.is_set():
                return
            if spec.singleton:
                await self._run_singleton_tick(spec)
            else:
                await self._run_local_tick(spec)

    async def _run_local_tick(self, spec: TickSpec) -> None:
        now = utcnow()
        due = self._local_ticks_due.get(spec.name)
        if due is not None and now < due:
            return
        self._local_ticks_due[spec.name] = now + spec.interval
        await self._run_tick_fn(spec)

    async def _run_singleton_tick(self, spec: TickSpec) -> None:
        now = utcnow()
        next_check = self._singleton_next_check.get(spec.name)
        if next_check is not None and now < next_check:
            return
        # The claim commits on its own, before the tick runs: on SQLite a tick that only reads does not
        # hold the database's write lock for its whole run, and a failing tick still used up its interval.
        async with self.db.transaction() as session:
            claimed = await repository.claim_tick(session, spec.name, self.id, now=now,
                                                  next_run_at=now + spec.interval)
            if not claimed:
                upcoming = await repository.tick_next_run_at(session, spec.name)
        if not claimed:
            # Someone else has this interval; look again when the next one is due (or at the next poll
            # when the row was busy or missing).
            self._singleton_next_check[spec.name] = upcoming if upcoming and upcoming > now else None
            return
        self._singleton_next_check[spec.name] = now + spec.interval
        await self._run_tick_fn(spec)

    async def _run_tick_fn(self, spec: TickSpec) -> None:
        error: str | None = None
        try:
            async with self.db.transaction() as session:
                await spec.fn(session)
        except Exception as exc:
            error = "".join(traceback.format_exception(exc))[-MAX_ERROR_CHARS:]
            logger.exception("tick %s failed; it runs again next interval", spec.name)
        if spec.singleton:
            with contextlib.suppress(Exception):
                async with self.db.transaction() as session:
                    await repository.record_tick_error(session, spec.name, error)


async def _wait_any(*events: asyncio.Event, timeout: float) -> None:
    """Sleep until one of `events` is set or `timeout` passes."""
    waiters = [asyncio.create_task(e.wait()) for e in events]
    try:
        await asyncio.wait(waiters, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for w in waiters:
            w.cancel()
