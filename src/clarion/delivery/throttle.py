"""Throughput limits per channel account (messages per second) that hold across every worker and process.

Workers share nothing but the database, so the budget lives in a row (GCRA, "virtual scheduling"): a bucket
holds the virtual time at which the account's next message may go. A worker reserves a window of `count`
slots with one atomic upsert in a short transaction of its own, then sends its messages spaced evenly
through that window. Two reservations never overlap, whichever worker or machine makes them, so the
combined rate never exceeds the limit however many workers there are.

Times: the bucket runs on the database's clock (one clock for every machine); each reservation is mapped
onto this process's monotonic event-loop clock when it comes back, so machines with skewed wall clocks
still agree. The application clock (kit.clock) is deliberately not used: tests freeze it, and a frozen
clock must not freeze or release real sending.

Precision: a message can go a little later than its slot (event-loop delays, the database's answer in
flight). A late message crowds the ones after it, so the pacing runs `headroom` (2 %) under the limit and
a message later than `max_lateness` (half of what the headroom buys: 10 ms) is not sent in that slot but
re-reserved. Then no 1-second window holds more than `rate` messages, plus the burst, if one is allowed.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Generic, TypeVar

from clarion.db import Database
from clarion.delivery.channel_repository import RateBucketRepo

T = TypeVar("T")
R = TypeVar("R")

# Pace this far under the limit: the slack absorbs the jitter between a slot and the moment its message goes.
DEFAULT_HEADROOM = 0.02
# How much sending one reservation covers; the next one is reserved while this one is sent.
DEFAULT_CHUNK_SECONDS = 0.25


@dataclass(frozen=True, slots=True)
class Reservation:
    """`count` consecutive slots of one bucket, `interval` seconds apart."""

    key: str
    count: int
    interval: float
    start: datetime  # slot 0 on the database's clock (in the past when the bucket lent a burst)
    first_at: float  # slot 0 on this process's event-loop clock (loop.time())
    answered_at: float  # loop.time() when the reservation came back: nothing of it can go earlier

    def due_at(self, i: int) -> float:
        """When slot `i` may go, on the event-loop clock."""
        return max(self.first_at + i * self.interval, self.answered_at)


def pacing_interval(rate_per_second: float, headroom: float = DEFAULT_HEADROOM) -> float:
    if rate_per_second <= 0:
        raise ValueError("rate_per_second must be positive")
    if not 0 <= headroom < 1:
        raise ValueError("headroom is a fraction in [0, 1)")
    return 1.0 / (rate_per_second * (1.0 - headroom))


async def reserve(database: Database, key: str, count: int, rate_per_second: float, *,
                  burst_seconds: float = 0.0, headroom: float = DEFAULT_HEADROOM) -> Reservation:
    """Reserve `count` message slots of the bucket `key`, limited to `rate_per_second` across all workers.

    Runs and commits its own short transaction at once: call it outside any transaction that holds locks
    (on SQLite, never while the caller holds an uncommitted write — it would wait for that very lock).
    `burst_seconds` lets an idle bucket send up to rate × burst_seconds messages at once; long-run
    throughput stays at the rate. Returns the window; `pace` sends through it."""
    if count < 1:
        raise ValueError("count must be at least 1")
    if burst_seconds < 0:
        raise ValueError("burst_seconds must not be negative")
    interval = pacing_interval(rate_per_second, headroom)
    cost = count * interval
    loop = asyncio.get_running_loop()
    async with database.transaction() as session:
        next_free_at, db_now = await RateBucketRepo(session).advance(key, cost, burst_seconds)
    answered_at = loop.time()
    start = next_free_at - cost
    # db_now is mapped onto the moment the answer arrived: slots can only come out late, never early.
    return Reservation(key=key, count=count, interval=interval, start=datetime.fromtimestamp(start, UTC),
                       first_at=answered_at + (start - db_now), answered_at=answered_at)


@dataclass
class Paced(Generic[T, R]):
    """What `pace` did: the results of the items it sent, and the items whose slot it missed."""

    sent: list[tuple[T, R]]
    missed: list[T]


async def pace(reservation: Reservation, items: Sequence[T], send_one: Callable[[T], Awaitable[R]], *,
               max_lateness: float = DEFAULT_HEADROOM / 2) -> Paced[T, R]:
    """Start `send_one(item)` for item i at slot i of `reservation`, without waiting for earlier sends to
    finish (a slow provider call must not push later slots), then wait for all of them.

    An item whose slot has passed by more than `max_lateness` seconds when the loop gets to it is not sent
    (its slot is wasted, which only lowers the rate) and is returned in `missed`, to be reserved again."""
    if len(items) > reservation.count:
        raise ValueError(f"{len(items)} items for a reservation of {reservation.count} slots")
    loop = asyncio.get_running_loop()
    tasks: list[tuple[T, asyncio.Task[R]]] = []
    missed: list[T] = []
    try:
        for i, item in enumerate(items):
            due = reservation.due_at(i)
            delay = due - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            if loop.time() - due > max_lateness:
                missed.append(item)
                continue
            tasks.append((item, asyncio.ensure_future(send_one(item))))
        results = await asyncio.gather(*(task for _, task in tasks))
    except BaseException:
        for _, task in tasks:
            task.cancel()
        raise
    return Paced(sent=[(item, result) for (item, _), result in zip(tasks, results, strict=True)], missed=missed)


class Throttle:
    """Sends any number of items through one account's shared budget: reserves chunks of slots (the next
    one while the current one is being sent, so a lone worker leaves no gaps) and re-reserves missed slots.

        throttle = Throttle(db, resolved.throttle_key, resolved.rate_limit_per_second)
        results = await throttle.send(messages, lambda m: provider.send([m]))
    """

    def __init__(self, database: Database, key: str, rate_per_second: float, *, burst_seconds: float = 0.0,
                 headroom: float = DEFAULT_HEADROOM, chunk_seconds: float = DEFAULT_CHUNK_SECONDS,
                 max_lateness: float | None = None) -> None:
        self.database = database
        self.key = key
        self.rate = rate_per_second
        self.burst_seconds = burst_seconds
        self.headroom = headroom
        pacing_interval(rate_per_second, headroom)  # validates both
        self.chunk = max(1, int(rate_per_second * chunk_seconds))
        # Half the headroom: the other half is for what comes after the check (the task starting, the network).
        self.max_lateness = headroom / 2 if max_lateness is None else max_lateness

    async def _reserve(self, count: int) -> Reservation:
        return await reserve(self.database, self.key, count, self.rate, burst_seconds=self.burst_seconds,
                             headroom=self.headroom)

    async def send(self, items: Sequence[T], send_one: Callable[[T], Awaitable[R]]) -> list[R]:
        """`send_one` for every item, paced; the results in the order of `items`."""
        results: dict[int, R] = {}
        queue: deque[int] = deque(range(len(items)))

        def take() -> list[int]:
            return [queue.popleft() for _ in range(min(self.chunk, len(queue)))]

        current = take()
        ahead: asyncio.Task[Reservation] | None = asyncio.ensure_future(self._reserve(len(current))) \
            if current else None
        try:
            while ahead is not None:
                reservation = await ahead
                batch, current = current, take()
                ahead = asyncio.ensure_future(self._reserve(len(current))) if current else None
                paced = await pace(reservation, batch, lambda i: send_one(items[i]),
                                   max_lateness=self.max_lateness)
                results.update(paced.sent)
                if paced.missed:
                    queue.extendleft(reversed(paced.missed))
                    if ahead is None:
                        current = take()
                        ahead = asyncio.ensure_future(self._reserve(len(current)))
        finally:
            if ahead is not None and not ahead.done():
                ahead.cancel()
        return [results[i] for i in range(len(items))]
