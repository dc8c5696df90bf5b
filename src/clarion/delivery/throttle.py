"""Throughput limits per channel account (messages per second) that hold across every worker and process.

Workers share nothing but the database, so the budget lives in a row (GCRA, "virtual scheduling"): a bucket
holds the virtual time at which the account's next message may go. A worker reserves a chunk of `count`
slots (about 0.2 s of the rate) with one atomic upsert in a short transaction of its own, then one timer
loop starts each message at its slot. Slots are `1 / (rate × (1 - headroom))` apart on one timeline shared
by every worker and machine, and two reservations never overlap.

Why that holds the limit, and what it needs (the "slot invariant"):

* A message never starts before its slot. Its slot is on the database's clock. When the database runs on
  this machine (SQLite; PostgreSQL over loopback or a socket) that is this machine's wall clock, shared
  exactly by every process. Otherwise `DatabaseClock` knows the offset only within bounds [lo, hi] (from
  the round trips that read it), and a message goes only once its slot has passed even on the latest
  reading (lo).
* A message starts at most `lateness_budget(headroom)` = headroom / (1 - headroom) after its slot (about
  10 ms at 1 %), judged on the earliest reading (hi), so the clock's own uncertainty is counted against it.
  Sending late is not free: a message late by L lands in the same 1-second window as the slots of the
  second after its own, so a window can hold the slots of 1 + L seconds. At the pacing rate that is
  rate × (1 - headroom) × (1 + L) ≤ rate exactly when L ≤ headroom / (1 - headroom). A message found later
  than that (the event loop or the process was stalled) is not sent in that slot; it is reserved again. So
  no 1-second window ever holds more than `rate` starts, plus rate × burst_seconds when a burst is lent.
* `margin` keeps part of that budget for what happens between the start of the send and the provider's
  own clock (the request on its way, the provider's queue); it is the only part that is not by
  construction.

An idle bucket's budget starts `lead` seconds in the future (the time for the reservation to come back),
so a lone worker's first slot is not already late when it arrives. The next chunk is reserved while the
current one is sent, so a busy bucket never falls idle between chunks.

The application clock (kit.clock) is deliberately not used: tests freeze it, and a frozen clock must not
freeze or release real sending.
"""

from __future__ import annotations

import asyncio
import time
import weakref
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Generic, TypeVar

from clarion.db import Database
from clarion.delivery.channel_repository import RateBucketRepo, database_clock_is_local

T = TypeVar("T")
R = TypeVar("R")

# Pace this far under the limit; the slack is what lets a message go a little after its slot.
DEFAULT_HEADROOM = 0.01
# How much sending one reservation covers: one database round trip per ~0.2 s of the rate, per worker.
DEFAULT_CHUNK_SECONDS = 0.2
# How far in the future an idle bucket's first slot lies: time for the reservation to reach the worker.
DEFAULT_LEAD = 0.02
MAX_LEAD = 0.5
# The part of the lateness budget kept for the way from the start of a send to the provider's clock.
DEFAULT_MARGIN = 0.002
# Samples of the database's clock older than this are not trusted (the clocks may drift apart).
CLOCK_HORIZON = 10.0


def pacing_interval(rate_per_second: float, headroom: float = DEFAULT_HEADROOM) -> float:
    if rate_per_second <= 0:
        raise ValueError("rate_per_second must be positive")
    if not 0 <= headroom < 1:
        raise ValueError("headroom is a fraction in [0, 1)")
    return 1.0 / (rate_per_second * (1.0 - headroom))


def lateness_budget(headroom: float = DEFAULT_HEADROOM) -> float:
    """How late after its slot a message may start while no 1-second window exceeds the rate (see above)."""
    return headroom / (1.0 - headroom)


class DatabaseClock:
    """This process's wall clock mapped onto the database's clock, with an error bound.

    Each read of the database's clock, taken between two local readings t0 and t1, says the offset
    (database - local) lies in [db_now - t1, db_now + resolution - t0]; the intersection of the recent
    samples is [lo, hi]. On one machine the offset is ~0 and hi - lo is the fastest round trip seen."""

    def __init__(self, *, local: bool = False) -> None:
        # local: the database's clock is this machine's wall clock (one kernel clock), the offset exactly 0.
        self.local = local
        self._samples: deque[tuple[float, float, float]] = deque(maxlen=256)  # (taken at, lo, hi)

    def add(self, t0: float, t1: float, db_now: float, resolution: float) -> None:
        if not self.local:
            self._samples.append((t1, db_now - t1, db_now + resolution - t0))

    def bounds(self) -> tuple[float, float] | None:
        if self.local:
            return 0.0, 0.0
        horizon = time.time() - CLOCK_HORIZON
        while self._samples and self._samples[0][0] < horizon:
            self._samples.popleft()
        if not self._samples:
            return None
        lo = max(s[1] for s in self._samples)
        hi = min(s[2] for s in self._samples)
        if lo > hi:  # a clock was stepped: keep only what the newest sample says
            last = self._samples[-1]
            self._samples.clear()
            self._samples.append(last)
            return last[1], last[2]
        return lo, hi

    def uncertainty(self) -> float:
        b = self.bounds()
        return float("inf") if b is None else b[1] - b[0]

    async def probe(self, database: Database, times: int = 3) -> None:
        """Read the database's clock a few times, outside any lock, to tighten the bounds."""
        if self.local:
            return
        async with database.sessions() as session:
            repo = RateBucketRepo(session)
            resolution = repo.clock_resolution
            for _ in range(times):
                t0 = time.time()
                db_now = await repo.clock()
                self.add(t0, time.time(), db_now, resolution)


_clocks: weakref.WeakKeyDictionary[Database, DatabaseClock] = weakref.WeakKeyDictionary()


def database_clock(database: Database) -> DatabaseClock:
    clock = _clocks.get(database)
    if clock is None:
        clock = _clocks[database] = DatabaseClock(local=database_clock_is_local(database.engine.url))
    return clock


@dataclass(frozen=True, slots=True)
class Reservation:
    """`count` consecutive slots of one bucket, `interval` seconds apart, on the database's clock."""

    key: str
    count: int
    interval: float
    first: float  # slot 0, epoch seconds of the database's clock (in the past when the bucket lent a burst)

    @property
    def start(self) -> datetime:
        return datetime.fromtimestamp(self.first, UTC)

    def slot(self, i: int) -> float:
        return self.first + i * self.interval


async def reserve(database: Database, key: str, count: int, rate_per_second: float, *,
                  burst_seconds: float = 0.0, headroom: float = DEFAULT_HEADROOM,
                  lead: float = DEFAULT_LEAD) -> Reservation:
    """Reserve `count` message slots of the bucket `key`, limited to `rate_per_second` across all workers.

    Runs and commits its own short transaction at once: call it outside any transaction that holds locks
    (on SQLite, never while the caller holds an uncommitted write — it would wait for that very lock).
    `burst_seconds` lets an idle bucket send up to rate × burst_seconds messages at once; long-run
    throughput stays at the rate. The read of the database's clock also tightens `database_clock`."""
    if count < 1:
        raise ValueError("count must be at least 1")
    if burst_seconds < 0:
        raise ValueError("burst_seconds must not be negative")
    if lead < 0:
        raise ValueError("lead must not be negative")
    interval = pacing_interval(rate_per_second, headroom)
    cost = count * interval
    async with database.transaction() as session:
        repo = RateBucketRepo(session)
        t0 = time.time()
        next_free_at, db_now = await repo.advance(key, cost, burst_seconds, lead)
        database_clock(database).add(t0, time.time(), db_now, repo.clock_resolution)
    return Reservation(key=key, count=count, interval=interval, first=next_free_at - cost)


@dataclass
class ThrottleStats:
    sent: int = 0
    missed: int = 0  # slots given up because the message would have started too late
    reservations: int = 0
    probes: int = 0


@dataclass
class _Batch(Generic[T, R]):
    """The sends started for one reservation, and which of them gave their slot up."""

    undecided: int = 0
    decided: asyncio.Event = field(default_factory=asyncio.Event)
    missed: list[int] = field(default_factory=list)


class Throttle:
    """Sends any number of items through one account's shared budget: reserves chunks of slots (the next
    one while the current one is being sent), starts each item at its slot from one timer loop, and
    re-reserves the slots it had to give up.

        throttle = Throttle(db, resolved.throttle_key, resolved.rate_limit_per_second)
        results = await throttle.send(messages, lambda m: provider.send([m]))
    """

    def __init__(self, database: Database, key: str, rate_per_second: float, *, burst_seconds: float = 0.0,
                 headroom: float = DEFAULT_HEADROOM, chunk_seconds: float = DEFAULT_CHUNK_SECONDS,
                 lead: float = DEFAULT_LEAD, margin: float = DEFAULT_MARGIN) -> None:
        self.database = database
        self.key = key
        self.rate = rate_per_second
        self.burst_seconds = burst_seconds
        self.headroom = headroom
        pacing_interval(rate_per_second, headroom)  # validates both
        self.chunk = max(1, int(rate_per_second * chunk_seconds))
        self.lead = lead
        if margin >= lateness_budget(headroom):
            raise ValueError("margin must be smaller than the lateness budget the headroom buys")
        # The latest a message may start after its slot, judged on the earliest reading of the clock. A
        # burst is lateness by contract (slots lent from the past): a window may then hold
        # rate × (1 - headroom) × (1 + burst + budget) ≤ rate × (1 + burst) starts.
        self.max_lateness = lateness_budget(headroom) - margin + burst_seconds
        self.clock = database_clock(database)
        self.stats = ThrottleStats()

    async def _reserve(self, count: int) -> Reservation:
        self.stats.reservations += 1
        return await reserve(self.database, self.key, count, self.rate, burst_seconds=self.burst_seconds,
                             headroom=self.headroom, lead=self.lead)

    async def _tighten_clock(self) -> None:
        # Half the budget lost to not knowing the clock would cost slots; a few lock-free reads fix that.
        if self.clock.uncertainty() > (self.max_lateness - self.burst_seconds) / 2:
            self.stats.probes += 1
            await self.clock.probe(self.database)

    async def send(self, items: Sequence[T], send_one: Callable[[T], Awaitable[R]]) -> list[R]:
        """`send_one` for every item, each started at its own slot; the results in the order of `items`.
        A send is not awaited before the next one starts (a slow provider call must not push later slots)."""
        if not items:
            return []
        loop = asyncio.get_running_loop()
        results: dict[int, R] = {}
        queue: deque[int] = deque(range(len(items)))
        tasks: set[asyncio.Task[None]] = set()
        failures: list[BaseException] = []

        def finished(task: asyncio.Task[None]) -> None:
            tasks.discard(task)
            if not task.cancelled() and task.exception() is not None:
                failures.append(task.exception())  # type: ignore[arg-type]

        def take() -> list[int]:
            return [queue.popleft() for _ in range(min(self.chunk, len(queue)))]

        async def start(i: int, slot: float, batch: _Batch[T, R]) -> None:
            # Decided here, at the very start of the send (no await between the check and send_one), so
            # neither a busy event loop nor this task's own scheduling can make the start later than judged.
            try:
                while True:
                    bounds = self.clock.bounds()
                    now = time.time()
                    if bounds is None:  # every sample aged out while waiting; be conservative
                        batch.missed.append(i)
                        return
                    lo, hi = bounds
                    if now + lo < slot:  # never before the slot, even if the wall clock was stepped back
                        await asyncio.sleep(slot - (now + lo))
                        continue
                    if now + hi - slot > self.max_lateness:
                        batch.missed.append(i)
                        return
                    break
            finally:
                batch.undecided -= 1
                if batch.undecided == 0:
                    batch.decided.set()
            self.stats.sent += 1
            results[i] = await send_one(items[i])

        async def pace(reservation: Reservation, indices: list[int]) -> list[int]:
            """The timer loop of one reservation: start each send when its slot is due; the slots missed."""
            batch: _Batch[T, R] = _Batch(undecided=len(indices))
            missed: list[int] = []
            for k, i in enumerate(indices):
                slot = reservation.slot(k)
                while True:
                    if failures:  # a send raised: stop starting new ones, as an unthrottled send would
                        raise failures[0]
                    bounds = self.clock.bounds()
                    if bounds is None:
                        await self._tighten_clock()
                        continue
                    lo, hi = bounds
                    now = time.time()
                    if now + lo < slot:
                        await asyncio.sleep(slot - (now + lo))
                        continue
                    break
                if now + hi - slot > self.max_lateness:  # already too late: not worth a task
                    missed.append(i)
                    batch.undecided -= 1
                    continue
                task = loop.create_task(start(i, slot, batch))
                tasks.add(task)
                task.add_done_callback(finished)
            if batch.undecided > 0:
                await batch.decided.wait()
            return missed + batch.missed

        await self._tighten_clock()
        current = take()
        ahead: asyncio.Task[Reservation] | None = loop.create_task(self._reserve(len(current)))
        try:
            while ahead is not None:
                reservation = await ahead
                batch, current = current, take()
                ahead = loop.create_task(self._reserve(len(current))) if current else None
                missed = await pace(reservation, batch)
                if missed:
                    self.stats.missed += len(missed)
                    if batch[0] in missed:
                        # The first slot was gone before it could be used (an idle bucket's answer took longer
                        # than the lead, or the loop stalled): give the next reservations more lead.
                        self.lead = min(MAX_LEAD, max(self.lead * 2, 0.001))
                    await self._tighten_clock()
                    queue.extendleft(sorted(missed, reverse=True))
                    if ahead is None:
                        current = take()
                        ahead = loop.create_task(self._reserve(len(current)))
            while tasks:
                await asyncio.gather(*list(tasks))
            if failures:
                raise failures[0]
        except BaseException:
            if ahead is not None and not ahead.done():
                ahead.cancel()
            for task in tasks:
                task.cancel()
            raise
        return [results[i] for i in range(len(items))]
