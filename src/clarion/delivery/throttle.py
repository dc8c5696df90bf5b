"""Throughput limits per channel account (messages per second) that hold across every worker and process.

Workers share nothing but the database, so the budget lives in a row (GCRA, "virtual scheduling"): a bucket
holds the virtual time at which the account's next message may go. A worker reserves a chunk of slots (two
seconds of the rate) with one atomic upsert in a short transaction of its own, the next chunk while it sends
the current one, and one timer loop starts each message when a slot allows it (`SlotLedger`). Slots are
`1 / (rate × (1 - headroom))` apart on one timeline shared by every worker and machine; two reservations
never overlap, and a worker's reservations that follow each other with nobody else's between them form one
*run*.

A provider counts the requests that reach it in any 1-second window; a request reaches it up to `margin`
after the sender started it. These rules (`SlotRules`) keep every such window within rate × (1 + burst),
whatever the other workers do:

* A *regular* start takes a slot that is due and goes at most `on_time` after it (half the lateness the
  headroom buys: 9 ms at 2 %, plus a lent burst). However the workers interleave, a window then holds at
  most the slots of 1 + margin + on_time seconds, ceil((1 + margin + on_time) / interval) regular starts;
  the capacity that leaves is `excess`.
* A *catch-up* takes a slot that went by unused (the process was stalled, or the reservation came back
  late) instead of giving it up. It goes only if every window that could hold it stays within the capacity:
  the other workers put at most their own slots in a window, so this one may put its slots plus `excess`,
  and it counts its own starts exactly (a regular start that went early in its allowance leaves room).
  Catch-ups are spaced, at most `catch_ups` a window, so a late message never goes in a clump; and they go
  only inside their slot's run, from a window after its start. Runs of different workers do not overlap, so
  two workers' catch-ups never share a window, and each worker's count of the others holds.
* A slot still unused when its run ends is given up (`ThrottleStats.missed`) and its message reserved again.

"Due" is judged on the earliest reading the database's clock may have now, "late" on the latest
(`DatabaseClock`); on one machine the two are the same. `margin` is the one part not by construction: the
way from the start of a send to the provider's clock (the request on its way, its queue).

An idle bucket's first slot lies `lead` seconds in the future, and at least twice a reservation's round
trip, so that a lone worker's first slot is not already late when it arrives.

The application clock (kit.clock) is deliberately not used: tests freeze it, and a frozen clock must not
freeze or release real sending.
"""

from __future__ import annotations

import asyncio
import math
import time
import weakref
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import Enum
from typing import TypeVar

from clarion.db import Database
from clarion.delivery.channel_repository import RateBucketRepo, database_clock_is_local

T = TypeVar("T")
R = TypeVar("R")

# Pace this far under the limit: the slack pays for starts a little after their slot and for catch-ups.
DEFAULT_HEADROOM = 0.02
# How much sending one reservation covers. Catch-ups need runs longer than a second; a round trip per two
# seconds of the rate, per worker, costs the database nothing.
DEFAULT_CHUNK_SECONDS = 2.0
# How far in the future an idle bucket's first slot lies: time for the reservation to reach the worker.
DEFAULT_LEAD = 0.02
MAX_LEAD = 0.5
# The way from the start of a send to the provider's clock.
DEFAULT_MARGIN = 0.002
# Samples of the database's clock older than this are not trusted (the clocks may drift apart).
CLOCK_HORIZON = 10.0


def pacing_interval(rate_per_second: float, headroom: float = DEFAULT_HEADROOM) -> float:
    if rate_per_second <= 0:
        raise ValueError("rate_per_second must be positive")
    if not 0 <= headroom < 1:
        raise ValueError("headroom is a fraction in [0, 1)")
    return 1.0 / (rate_per_second * (1.0 - headroom))


class DatabaseClock:
    """This process's wall clock mapped onto the database's clock, with an error bound.

    Each read of the database's clock, taken between two local readings t0 and t1, says the offset
    (database - local) lies in [db_now - t1, db_now + resolution - t0]; the intersection of the recent
    samples is [lo, hi]. On one machine the offset is ~0 and hi - lo is the fastest round trip seen."""

    def __init__(self, *, local: bool = False) -> None:
        # local: the database's clock is this machine's wall clock (one kernel clock), the offset exactly 0.
        self.local = local
        self._samples: deque[tuple[float, float, float]] = deque(maxlen=256)  # (taken at, lo, hi)
        # How long reservations took to come back (seconds): an idle bucket's lead must exceed that.
        self._round_trips: deque[float] = deque(maxlen=16)

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

    def add_round_trip(self, seconds: float) -> None:
        self._round_trips.append(seconds)

    @property
    def round_trip(self) -> float:
        """The quickest recent reservation's round trip. A slower one waited for the bucket's row, which only
        happens while another worker is reserving, when the bucket is not idle and the lead does not count."""
        return min(self._round_trips, default=0.0)

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
    clock = database_clock(database)
    asked = time.monotonic()
    async with database.transaction() as session:
        repo = RateBucketRepo(session)
        t0 = time.time()
        next_free_at, db_now = await repo.advance(key, cost, burst_seconds, lead)
        clock.add(t0, time.time(), db_now, repo.clock_resolution)
    clock.add_round_trip(time.monotonic() - asked)
    return Reservation(key=key, count=count, interval=interval, first=next_free_at - cost)


@dataclass(frozen=True, slots=True)
class SlotRules:
    """How a sender may use its slots so that no window of the provider's clock takes more than `capacity`
    starts, whatever the other senders do (see the module doc for why)."""

    interval: float  # seconds between two slots of the timeline
    capacity: float  # starts a provider's 1-second window takes: rate × (1 + burst_seconds)
    on_time: float  # the latest a regular start follows its slot (a lent burst included)
    margin: float  # the way from the start of a send to the provider's clock
    excess: int  # starts beyond its slots one sender may put in a window: what the regular worst case leaves
    catch_ups: int  # the most catch-ups a window takes from one sender (when its starts are on time); 0: none

    @classmethod
    def for_rate(cls, rate_per_second: float, *, headroom: float = DEFAULT_HEADROOM, burst_seconds: float = 0.0,
                 margin: float = DEFAULT_MARGIN, on_time: float | None = None) -> SlotRules:
        interval = pacing_interval(rate_per_second, headroom)
        if burst_seconds < 0:
            raise ValueError("burst_seconds must not be negative")
        if margin < 0 or (on_time is not None and on_time < 0):
            raise ValueError("margin and on_time must not be negative")
        capacity = rate_per_second * (1.0 + burst_seconds)
        # A provider's window holds the regular starts whose slots lie in 1 + margin + burst + on_time seconds:
        # at most ceil(that / interval), which stays within the capacity while on_time is at most `room`.
        room = capacity * interval - (1.0 + margin + burst_seconds) - 1e-9
        if room <= 0:
            raise ValueError("margin must be smaller than the lateness budget the headroom buys")
        whole = math.floor(capacity + 1e-9)

        def excess_for(late: float) -> int:
            return whole - math.ceil((1.0 + margin + burst_seconds + late) / interval)

        if on_time is not None:
            late = min(on_time, room)
        else:
            # Half the room to lateness, half to a worst case of catch-ups; at a rate too low for half the room
            # to hold a whole start, all of it to lateness (catch-ups then live on the credit of on-time starts).
            late = room / 2 if excess_for(room / 2) >= 1 else room
        excess = excess_for(late)
        catch_ups = max(0, whole - math.ceil((1.0 + margin + burst_seconds) / interval))
        return cls(interval=interval, capacity=capacity, on_time=late + burst_seconds, margin=margin,
                   excess=excess, catch_ups=catch_ups)

    @property
    def window(self) -> float:
        """A provider's second as a sender sees it: two of its starts may reach the provider `margin` closer."""
        return 1.0 + self.margin

    @property
    def catch_up_spacing(self) -> float:
        return self.window / self.catch_ups if self.catch_ups else math.inf

    def most_regular_starts(self, seconds: float) -> int:
        """The most regular starts, of all senders together, in any `seconds` of one clock."""
        return math.ceil((seconds + self.on_time) / self.interval)

    def most_catch_ups(self, seconds: float) -> int:
        """The most catch-up starts, of all senders together, in any `seconds` of one clock: one sender's are
        spaced, and two senders' are at least a window apart."""
        if not self.catch_ups:
            return 0
        return min(math.floor(seconds / self.catch_up_spacing) + 1, self.catch_ups * math.ceil(seconds / self.window))

    def most_starts(self, seconds: float) -> int:
        return self.most_regular_starts(seconds) + self.most_catch_ups(seconds)


@dataclass
class ThrottleStats:
    sent: int = 0
    caught_up: int = 0  # starts that used a slot gone by unused, at the catch-up pace
    missed: int = 0  # slots given up (still unused when their run ended); their messages were reserved again
    reservations: int = 0
    probes: int = 0


class Start(Enum):
    REGULAR = "regular"
    CATCH_UP = "catch-up"


@dataclass(eq=False, slots=True)
class _Run:
    """Consecutive slots of one sender with nobody else's between them: [start, end) on the database's clock."""

    start: float
    end: float


class SlotLedger:
    """One sender's reserved slots, and which start may take which (the rules of `SlotRules`).

    Pure bookkeeping, so that it is exact under a simulation as under a busy event loop: every reading of a
    clock is passed in. `earliest` and `latest` bound the database's clock now (one value on one machine);
    `local` is this process's monotonic clock, which spaces the catch-ups.

    A catch-up must leave every window that could hold it (those beginning in the last `window` seconds)
    within this sender's slots there, counted from on_time before the window, plus `excess`. The *balance*,
    starts so far minus slots so far with each slot counted from on_time after it, falls by the slots and
    rises by the starts of any stretch of time; so the starts beyond the slots in a window that began at b
    are the balance now less the balance at b, plus what may still start in it (`_beyond`), and the lowest
    balance of the last window gives the worst of them. What may still start is counted as if it all fell in
    the window: this catch-up, the on-time starts pending, and one start per slot not yet due (which cancels
    against that slot)."""

    def __init__(self, rules: SlotRules, stats: ThrottleStats | None = None) -> None:
        self.rules = rules
        self.stats = stats if stats is not None else ThrottleStats()
        self._reserved: deque[tuple[Reservation, _Run]] = deque()  # reservations with slots not yet due
        self._next = 0  # the first slot of _reserved[0] not yet due
        self.not_due = 0
        self._last_run: _Run | None = None
        self._fresh: deque[tuple[float, _Run]] = deque()  # due and unused, at most on_time ago: regular
        self._stale: deque[tuple[float, _Run]] = deque()  # due and unused, longer ago: for catch-ups
        self._last_catch_up = -math.inf  # local time
        self._surplus = 0  # starts so far less slots due so far
        self._counting: deque[float] = deque()  # when due slots begin to count against the balance
        # (since, balance), the last window; its last entry is the balance now and the time of its latest change.
        self._history: deque[tuple[float, int]] = deque([(-math.inf, 0)])
        self._lows: deque[tuple[float, int]] = deque()  # its running minima (a sliding-window minimum)

    def add(self, reservation: Reservation) -> None:
        end = reservation.slot(reservation.count)
        run = self._last_run
        # Right where the previous reservation ended: nobody reserved in between, so it is one run.
        if run is not None and abs(reservation.first - run.end) <= reservation.interval * 1e-3:
            run.end = end
        else:
            run = self._last_run = _Run(reservation.first, end)
        self._reserved.append((reservation, run))
        self.not_due += reservation.count

    @property
    def held(self) -> int:
        """Slots this sender may still use."""
        return self.not_due + len(self._fresh) + len(self._stale)

    def _mark(self, at: float, change: int) -> None:
        marked, balance = self._history[-1]
        at, balance = max(at, marked), balance + change
        self._history.append((at, balance))
        while self._lows and self._lows[-1][1] >= balance:
            self._lows.pop()
        self._lows.append((at, balance))

    def _lowest_balance(self, since: float) -> int:
        history, lows = self._history, self._lows
        while len(history) > 1 and history[1][0] <= since:
            history.popleft()
        while lows and lows[0][0] <= since:
            lows.popleft()
        return min(history[0][1], lows[0][1]) if lows else history[0][1]

    def advance(self, earliest: float, latest: float) -> None:
        # Due once its time has come even on the earliest reading; stale once later than on_time on the latest.
        while self._reserved:
            reservation, run = self._reserved[0]
            slot = reservation.slot(self._next)
            if slot > earliest:
                break
            self._fresh.append((slot, run))
            self._counting.append(slot + self.rules.on_time)
            self._surplus -= 1
            self.not_due -= 1
            self._next += 1
            if self._next == reservation.count:
                self._reserved.popleft()
                self._next = 0
        while self._counting and self._counting[0] <= latest:
            self._mark(self._counting.popleft(), -1)
        while self._fresh and latest - self._fresh[0][0] > self.rules.on_time:
            self._stale.append(self._fresh.popleft())
        # Runs end in the order of their slots, so the oldest stale slot is the first to go.
        while self._stale and (not self.rules.catch_ups or latest > self._stale[0][1].end):
            self._stale.popleft()
            self.stats.missed += 1
        self._lowest_balance(earliest - self.rules.window)  # forgets what no window can hold any more

    def _beyond(self, earliest: float) -> int:
        """This sender's starts beyond its slots in the worst window that could hold a start now, that start
        included: it, the pending on-time ones, and the balance now less its lowest point in the last window."""
        lowest = self._lowest_balance(earliest - self.rules.window)
        return 1 + len(self._fresh) + self._surplus - lowest

    def _catch_up_fits(self, earliest: float, local: float) -> bool:
        if not self._stale or local - self._last_catch_up < self.rules.catch_up_spacing:
            return False
        _, run = self._stale[0]
        if earliest < run.start + self.rules.window:
            return False  # too early in the run: another sender's catch-ups may still be in this window
        return self._beyond(earliest) <= self.rules.excess

    def ready(self, earliest: float, latest: float, local: float) -> int:
        """How many starts could claim a slot now."""
        self.advance(earliest, latest)
        return len(self._fresh) + (1 if self._catch_up_fits(earliest, local) else 0)

    def claim(self, earliest: float, latest: float, local: float) -> Start | None:
        """Take a slot for a start now, if one may go: the oldest on-time slot, else a catch-up."""
        self.advance(earliest, latest)
        if self._fresh:
            self._fresh.popleft()
            kind = Start.REGULAR
        elif self._catch_up_fits(earliest, local):
            self._stale.popleft()
            self._last_catch_up = local
            self.stats.caught_up += 1
            kind = Start.CATCH_UP
        else:
            return None
        self._surplus += 1
        self._mark(latest, +1)
        return kind

    def wait_hint(self, earliest: float, latest: float, local: float) -> float | None:
        """Seconds until a start may become possible or a slot be given up; None: not before more slots come."""
        hints = []
        if self._reserved:
            reservation, _ = self._reserved[0]
            hints.append(reservation.slot(self._next) - earliest)
        if self._stale and self.rules.catch_ups:
            _, run = self._stale[0]
            wait = max(run.start + self.rules.window - earliest, self._last_catch_up + self.rules.catch_up_spacing - local)
            if self._beyond(earliest) > self.rules.excess:
                # Only the window moving on lowers it: wait until its oldest balance leaves it.
                edge = min(self._history[1][0] if len(self._history) > 1 else math.inf,
                           self._lows[0][0] if self._lows else math.inf)
                wait = max(wait, edge + self.rules.window - earliest)
            # Wake no later than the slot is given up, so that its message is reserved again at once.
            hints.append(min(wait, run.end - latest + 1e-4))
        return max(0.0, min(hints)) if hints else None


class Throttle:
    """Sends any number of items through one account's shared budget: reserves chunks of slots (the next
    one while the current one is being sent), starts each item when a slot allows it (`SlotLedger`) from one
    timer loop, and reserves again for the slots it had to give up.

        throttle = Throttle(db, resolved.throttle_key, resolved.rate_limit_per_second)
        results = await throttle.send(messages, lambda m: provider.send([m]))
    """

    def __init__(self, database: Database, key: str, rate_per_second: float, *, burst_seconds: float = 0.0,
                 headroom: float = DEFAULT_HEADROOM, chunk_seconds: float = DEFAULT_CHUNK_SECONDS,
                 lead: float = DEFAULT_LEAD, margin: float = DEFAULT_MARGIN, on_time: float | None = None) -> None:
        if lead < 0:
            raise ValueError("lead must not be negative")
        if chunk_seconds <= 0:
            raise ValueError("chunk_seconds must be positive")
        self.database = database
        self.key = key
        self.rate = rate_per_second
        self.burst_seconds = burst_seconds
        self.headroom = headroom
        self.rules = SlotRules.for_rate(rate_per_second, headroom=headroom, burst_seconds=burst_seconds,
                                        margin=margin, on_time=on_time)
        self.chunk = max(1, int(rate_per_second * chunk_seconds))
        self.lead = lead
        self.clock = database_clock(database)
        self.stats = ThrottleStats()

    async def _reserve(self, count: int) -> Reservation:
        self.stats.reservations += 1
        # An idle bucket's first slot lies `lead` after the database's now: keep that longer than a round trip
        # (this process's, whichever throttle made it), or the first slots are late on arrival.
        lead = min(MAX_LEAD, max(self.lead, 2.0 * self.clock.round_trip))
        return await reserve(self.database, self.key, count, self.rate, burst_seconds=self.burst_seconds,
                             headroom=self.headroom, lead=lead)

    async def _tighten_clock(self) -> None:
        # Half the on-time allowance lost to not knowing the clock would cost slots; a few lock-free reads fix it.
        if self.clock.uncertainty() > (self.rules.on_time - self.burst_seconds) / 2:
            self.stats.probes += 1
            await self.clock.probe(self.database)

    def _reading(self) -> tuple[float, float, float] | None:
        """(earliest, latest) reading of the database's clock now, and the monotonic clock; None: unknown."""
        bounds = self.clock.bounds()
        if bounds is None:
            return None
        now = time.time()
        return now + bounds[0], now + bounds[1], time.monotonic()

    async def send(self, items: Sequence[T], send_one: Callable[[T], Awaitable[R]]) -> list[R]:
        """`send_one` for every item, each started when a slot allows; the results in the order of `items`.
        A send is not awaited before the next one starts (a slow provider call must not push later slots)."""
        if not items:
            return []
        loop = asyncio.get_running_loop()
        ledger = SlotLedger(self.rules, self.stats)
        queue: deque[int] = deque(range(len(items)))
        results: dict[int, R] = {}
        tasks: set[asyncio.Task[None]] = set()
        failures: list[BaseException] = []
        reserving: asyncio.Task[Reservation] | None = None
        starting = 0  # start tasks created that have not run yet

        def finished(task: asyncio.Task[None]) -> None:
            tasks.discard(task)
            if not task.cancelled() and task.exception() is not None:
                failures.append(task.exception())  # type: ignore[arg-type]

        async def start() -> None:
            # The slot is claimed here, at the very start of the send (no await between the claim and send_one),
            # so neither a busy event loop nor this task's own scheduling can make the start later than judged.
            nonlocal starting
            starting -= 1
            if failures or not queue:
                return
            reading = self._reading()
            if reading is None or ledger.claim(*reading) is None:
                return  # the moment passed while this task waited its turn; the timer loop looks again
            i = queue.popleft()
            self.stats.sent += 1
            results[i] = await send_one(items[i])

        await self._tighten_clock()
        try:
            while queue:
                if failures:  # a send raised: stop starting new ones, as an unthrottled send would
                    raise failures[0]
                if reserving is not None and reserving.done():
                    ledger.add(reserving.result())
                    reserving = None
                need = len(queue) - ledger.held
                # One chunk ahead of the one being sent, no further: the timeline is everyone's.
                if reserving is None and need > 0 and ledger.not_due <= self.chunk:
                    reserving = loop.create_task(self._reserve(min(self.chunk, need)))
                reading = self._reading()
                if reading is None:  # every sample of a remote clock aged out
                    await self._tighten_clock()
                    continue
                ready = min(ledger.ready(*reading), len(queue)) - starting
                if ready > 0:
                    for _ in range(ready):
                        task = loop.create_task(start())
                        tasks.add(task)
                        task.add_done_callback(finished)
                    starting += ready
                    await asyncio.sleep(0)  # they claim their slots before this loop looks again
                    continue
                delay = ledger.wait_hint(*reading)
                if reserving is not None:
                    await asyncio.wait({reserving}, timeout=delay)
                else:
                    await asyncio.sleep(self.rules.on_time if delay is None else delay)
            while tasks:
                await asyncio.wait(set(tasks))
            if failures:
                raise failures[0]
        except BaseException:
            if reserving is not None:
                reserving.cancel()
            for task in tasks:
                task.cancel()
            raise
        return [results[i] for i in range(len(items))]
