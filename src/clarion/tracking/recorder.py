"""The hot path's helpers: a batched writer for open/click events and cached click targets.

A pixel or redirect must answer in microseconds, so the endpoints do not wait on a write: they hand each hit to
the `EventRecorder`, whose single task writes what is buffered every `tracking_flush_interval` (0.25 s by
default), or at once when a full batch is waiting, each batch in one transaction with a constant number of
statements (campaign.sending.record_events). A clean shutdown (the public router's lifespan) flushes what is
left. A process killed outright loses at most the hits not yet written — the price of not holding a database
transaction per pixel.

Events are durable within about a second, also under a load the process cannot keep up with: the writer shares
the event loop (and, on SQLite, the GIL) with the requests, and left alone it falls behind them. When the
oldest hit waiting has waited `max_lag` seconds, the request that brings the next hit waits (at most
`max_lag`) for the writer to commit a batch before it answers, so the senders of hits slow down to what can be
written instead of the backlog growing; each such wait is counted (`slowed`). Nothing is dropped for that.

The buffer is also bounded. When it is full (the database is away) a request waits for room, up to `full_wait`
seconds; each wait is counted (`waited`). Only a hit that still finds no room after that is dropped, counted
(`dropped`) and logged — never silently.

Both classes own their transactions, like a request edge or the job runner.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections import OrderedDict, deque
from dataclasses import dataclass
from typing import Any

from sqlalchemy.exc import OperationalError

from clarion.config import Settings
from clarion.db import Database
from clarion.tracking import service
from clarion.tracking.machine import MachineRules
from clarion.tracking.service import ClickTarget, LinkTarget, TrackedHit

logger = logging.getLogger("clarion.tracking")

CAPACITY = 50_000     # hits held in memory before a request must wait for the writer
BATCH_SIZE = 1000     # hits that wake the writer before its interval is up (larger batches cost less a hit)
BACKLOG_BATCH = 2000  # most hits per transaction; also bounds each write's CPU slice on the event loop
MAX_LAG = 0.5         # seconds the oldest waiting hit may wait before requests are slowed down to the writer
                      # (at least two flush intervals, so a writer on time never slows anyone)
KNOWN_CLIENTS = 50_000  # (contact, client) pairs remembered as already stored: readers reopen on the same device
FULL_WAIT = 2.0       # seconds a request waits for room in a full buffer before its hit is dropped (and counted)
RETRY_DELAY = 0.5     # seconds before the writer tries again after the database failed


class EventRecorder:
    def __init__(self, database: Database, settings: Settings, *, capacity: int = CAPACITY,
                 batch_size: int = BATCH_SIZE, backlog_batch: int = BACKLOG_BATCH, max_lag: float | None = None,
                 full_wait: float = FULL_WAIT) -> None:
        self.database = database
        self.interval = settings.tracking_flush_interval
        self.rules = MachineRules.from_settings(settings)
        self.capacity = capacity
        self.batch_size = batch_size
        self.backlog_batch = max(backlog_batch, batch_size)
        self.max_lag = max_lag if max_lag is not None else max(MAX_LAG, 2 * self.interval)
        self.full_wait = full_wait
        # (time.monotonic() when buffered, hit), oldest first
        self._buffer: deque[tuple[float, TrackedHit]] = deque()
        self._flush_lock = asyncio.Lock()
        self._batch_ready = asyncio.Event()
        self._room = asyncio.Event()
        self._committed = asyncio.Event()  # replaced by a fresh one after each committed batch
        self._task: asyncio.Task[None] | None = None
        self._failing = False  # the last write failed: waiting would not help the writer, so nobody waits
        self._known_clients = _LRU(KNOWN_CLIENTS)  # pairs committed as seen (tracking_clients), True
        self.on_written: list[Any] = []  # callbacks(RecordedHits) after each committed batch
        self.written = 0   # events committed
        self.flushes = 0   # transactions committed
        self.slowed = 0    # requests that waited for the writer to catch up (their hits were kept)
        self.waited = 0    # requests that found the buffer full and waited for room
        self.dropped = 0   # hits lost: no room after full_wait, or a hit that fails even when written alone

    @property
    def buffered(self) -> int:
        return len(self._buffer)

    @property
    def failing(self) -> bool:
        """Whether the writer's last attempt failed (it retries every RETRY_DELAY)."""
        return self._failing

    @property
    def lag(self) -> float:
        """Seconds the oldest hit still waiting for the writer has waited (0 when none is)."""
        return time.monotonic() - self._buffer[0][0] if self._buffer else 0.0

    def offer(self, hit: TrackedHit) -> bool:
        """Buffer the hit when that needs no wait (the common case: no await on the request path): there is room
        and the writer is not behind. False, and nothing buffered, otherwise; then `add` it."""
        buffer = self._buffer
        now = time.monotonic()
        if len(buffer) >= self.capacity or (buffer and now - buffer[0][0] > self.max_lag):
            return False
        self._append(now, hit)
        return True

    def _append(self, now: float, hit: TrackedHit) -> None:
        self._buffer.append((now, hit))
        if len(self._buffer) >= self.batch_size:
            self._batch_ready.set()
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._run(), name="clarion-tracking-recorder")

    async def add(self, hit: TrackedHit) -> None:
        """Buffer the hit; when the writer is behind, wait (at most max_lag) for it to commit a batch first, and
        when the buffer is full, wait up to `full_wait` for room."""
        if self.offer(hit):
            return
        if len(self._buffer) < self.capacity:
            self._append(time.monotonic(), hit)
            if self._failing:
                return
            self.slowed += 1
            self._batch_ready.set()  # make sure the writer is working on it, not sleeping
            committed = self._committed
            try:
                await asyncio.wait_for(committed.wait(), self.max_lag)
            except TimeoutError:
                pass
            return
        self.waited += 1
        deadline = time.monotonic() + self.full_wait
        while (left := deadline - time.monotonic()) > 0:
            self._room.clear()
            self._batch_ready.set()
            try:
                await asyncio.wait_for(self._room.wait(), left)
            except TimeoutError:
                break
            if len(self._buffer) < self.capacity:
                self._append(time.monotonic(), hit)
                return
        self.dropped += 1
        if self.dropped == 1 or self.dropped % 1000 == 0:
            logger.error("tracking: event buffer full for %.1fs (database unavailable?); %d hits dropped so far",
                         self.full_wait, self.dropped)

    async def _run(self) -> None:
        while True:
            if len(self._buffer) < self.batch_size:
                try:
                    await asyncio.wait_for(self._batch_ready.wait(), self.interval)
                except TimeoutError:
                    pass
            self._batch_ready.clear()
            try:
                await self.flush()
                self._failing = False
            except asyncio.CancelledError:
                raise
            except Exception:  # the writer must outlive any one bad batch
                self._failing = True
                logger.exception("tracking: writing events failed; retrying")
                await asyncio.sleep(RETRY_DELAY)

    async def flush(self) -> int:
        """Write everything buffered now, a batch per transaction; returns how many events were written."""
        written = 0
        async with self._flush_lock:
            while self._buffer:
                # A transaction costs a fixed number of database round trips, each of which waits its turn on a
                # busy event loop, so a writer that has fallen behind catches up in larger transactions.
                count = min(len(self._buffer), self.backlog_batch)
                entries = [self._buffer.popleft() for _ in range(count)]
                batch = [hit for _, hit in entries]
                try:
                    written += await self._write(batch)
                except OperationalError:
                    # The database is away (or locked past its timeout): keep the hits, in order, for next time.
                    self._buffer.extendleft(reversed(entries))
                    raise
                except Exception:  # noqa: BLE001 - isolate the bad hit rather than lose the batch
                    written += await self._write_one_by_one(batch)
                finally:
                    if len(self._buffer) < self.capacity:
                        self._room.set()
        return written

    async def _write(self, batch: list[TrackedHit]) -> int:
        async with self.database.transaction() as session:
            recorded = await service.record_hits(session, batch, self.rules, known_clients=self._known_clients)
        for client in recorded.clients:  # committed: stored as seen from now on
            self._known_clients.put(client, True)
        self.written += recorded.count
        self.flushes += 1
        committed, self._committed = self._committed, asyncio.Event()
        committed.set()
        for callback in self.on_written:
            callback(recorded)
        return recorded.count

    async def _write_one_by_one(self, batch: list[TrackedHit]) -> int:
        """A batch failed on one bad hit: write the rest singly and drop (log) only the ones that fail."""
        written = 0
        for hit in batch:
            try:
                written += await self._write([hit])
            except Exception:  # a hit that fails alone is poison: log it, keep the rest
                self.dropped += 1
                logger.exception("tracking: dropped %s of recipient %s", hit.kind, hit.recipient_id)
        return written

    async def close(self) -> None:
        """Stop the writer task and write what is still buffered."""
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
            self._task = None
        for _ in range(20):  # the database may be briefly away; do not hang a shutdown forever
            try:
                await self.flush()
                return
            except OperationalError:
                await asyncio.sleep(RETRY_DELAY)
        if self._buffer:
            logger.error("tracking: %d events could not be written before shutdown", len(self._buffer))


class _LRU(OrderedDict[Any, Any]):
    def __init__(self, size: int) -> None:
        super().__init__()
        self.size = size

    def get_fresh(self, key: Any) -> Any:
        value = self.get(key)
        if value is not None:
            self.move_to_end(key)
        return value

    def put(self, key: Any, value: Any) -> None:
        self[key] = value
        self.move_to_end(key)
        if len(self) > self.size:
            self.popitem(last=False)


# What one lookup read: link id → link (None when there is no such link), recipient id → (tenant, campaign).
_Found = tuple[dict[int, LinkTarget | None], dict[int, tuple[uuid.UUID, uuid.UUID]]]


@dataclass
class ClickTargets:
    """What a redirect needs, cached in bounded LRUs: link id → (tenant, campaign, url), and recipient id →
    (tenant, campaign). Links never change once registered and a recipient never changes campaign, so in the
    common case a click needs no database round trip; misses are not cached (a link may be registered a
    moment later). The event recorder feeds the recipient cache from the rows each batch already read.

    Clicks that miss at the same time share one lookup: each first click of a recipient whose open was not
    recorded yet misses, and a transaction apiece cost ~1 ms of CPU (a new campaign's first clicks come in a
    burst). The misses gathered while a lookup is queued are read in one transaction, recipients in one query."""

    database: Database
    size: int = 100_000

    def __post_init__(self) -> None:
        self._links = _LRU(self.size)
        self._recipients = _LRU(self.size)
        self._wanted_links: set[int] = set()
        self._wanted_recipients: set[int] = set()
        self._lookup: asyncio.Task[_Found] | None = None  # the queued lookup that takes the wanted ids
        self.lookups = 0  # database round trips taken

    def cached(self, recipient_id: int, link_id: int) -> ClickTarget | None:
        link: LinkTarget | None = self._links.get_fresh(link_id)
        owner = self._recipients.get_fresh(recipient_id)
        if link is None or owner is None:
            return None
        return self._target(recipient_id, link_id, link, owner)

    async def find(self, recipient_id: int, link_id: int) -> ClickTarget | None:
        target = self.cached(recipient_id, link_id)
        if target is not None:
            return target
        if link_id not in self._links:
            self._wanted_links.add(link_id)
        if recipient_id not in self._recipients:
            self._wanted_recipients.add(recipient_id)
        if self._lookup is None:
            self._lookup = asyncio.get_running_loop().create_task(self._look_up(), name="clarion-click-targets")
        # Shielded: a client that goes away must not cancel the lookup the other clicks wait on.
        links, owners = await asyncio.shield(self._lookup)
        # What this lookup read, or else what was cached before it (a large lookup may have pushed that out since)
        link = links.get(link_id) or self._links.get_fresh(link_id)
        owner = owners.get(recipient_id) or self._recipients.get_fresh(recipient_id)
        if link is None or owner is None:
            return None
        return self._target(recipient_id, link_id, link, owner)

    async def _look_up(self) -> _Found:
        await asyncio.sleep(0)  # the clicks already read from their sockets add their ids first
        self._lookup = None  # a miss from now on queues the next lookup
        links, self._wanted_links = self._wanted_links, set()
        recipients, self._wanted_recipients = self._wanted_recipients, set()
        self.lookups += 1
        async with self.database.transaction() as session:
            found_links = {link_id: await service.find_link(session, link_id) for link_id in links}
            owners = await service.recipient_campaigns(session, recipients)
        for link_id, link in found_links.items():
            if link is not None:
                self._links.put(link_id, link)
        for recipient_id, owner in owners.items():
            self._recipients.put(recipient_id, owner)
        return found_links, owners

    @staticmethod
    def _target(recipient_id: int, link_id: int, link: LinkTarget,
                owner: tuple[uuid.UUID, uuid.UUID]) -> ClickTarget | None:
        if owner != (link.tenant_id, link.campaign_id):
            return None  # a link of another campaign: not this recipient's to follow
        return ClickTarget(recipient_id, link_id, link.campaign_id, link.url)

    def learn(self, recorded: service.RecordedHits) -> None:
        for recipient_id, owner in recorded.campaigns.items():
            if recipient_id not in self._recipients:
                self._recipients.put(recipient_id, owner)


def recorder_for(app: Any) -> EventRecorder:
    """The app's recorder, created on first use (tests drive the app without running its lifespan)."""
    recorder = getattr(app.state, "tracking_recorder", None)
    if recorder is None:
        recorder = app.state.tracking_recorder = EventRecorder(app.state.db, app.state.settings)
        recorder.on_written.append(click_targets_for(app).learn)
    return recorder


def click_targets_for(app: Any) -> ClickTargets:
    targets = getattr(app.state, "tracking_click_targets", None)
    if targets is None:
        targets = app.state.tracking_click_targets = ClickTargets(app.state.db)
    return targets
