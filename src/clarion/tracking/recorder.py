"""The hot path's helpers: a batched writer for open/click events and a read-through cache of click targets.

A pixel or redirect must answer in microseconds, so the endpoints never wait on a write: they hand each hit to
the `EventRecorder`, whose single task writes everything buffered in one transaction every
`tracking_flush_interval` (0.1 s by default). Events are durable within about that interval; a clean shutdown
(the public router's lifespan) flushes what is left. A process killed outright loses at most the last interval's
hits — the price of not holding a database transaction per pixel.

Both classes own their transactions, like a request edge or the job runner.
"""

from __future__ import annotations

import asyncio
import logging
from collections import OrderedDict
from typing import Any

from sqlalchemy.exc import OperationalError

from clarion.config import Settings
from clarion.db import Database
from clarion.tracking import service
from clarion.tracking.machine import MachineRules
from clarion.tracking.service import ClickTarget, TrackedHit

logger = logging.getLogger("clarion.tracking")

# Beyond this many unwritten hits (the database is down) new ones are dropped rather than exhausting memory.
MAX_BUFFERED = 200_000


class EventRecorder:
    def __init__(self, database: Database, settings: Settings) -> None:
        self.database = database
        self.interval = settings.tracking_flush_interval
        self.rules = MachineRules.from_settings(settings)
        self._buffer: list[TrackedHit] = []
        self._flush_lock = asyncio.Lock()
        self._task: asyncio.Task[None] | None = None
        self._closed = False
        self.written = 0
        self.dropped = 0

    def add(self, hit: TrackedHit) -> None:
        if len(self._buffer) >= MAX_BUFFERED:
            self.dropped += 1
            return
        self._buffer.append(hit)
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._run(), name="clarion-tracking-recorder")

    @property
    def buffered(self) -> int:
        return len(self._buffer)

    async def _run(self) -> None:
        while not self._closed:
            await asyncio.sleep(self.interval)
            try:
                await self.flush()
            except Exception:  # the writer must outlive any one bad batch
                logger.exception("tracking: writing events failed; retrying")

    async def flush(self) -> int:
        """Write everything buffered now; returns how many events were written."""
        async with self._flush_lock:
            batch, self._buffer = self._buffer, []
            if not batch:
                return 0
            try:
                written = await self._write(batch)
            except OperationalError:
                # The database is away (or locked past its timeout): keep the hits, in order, for the next round.
                self._buffer[:0] = batch
                raise
            except Exception:  # noqa: BLE001 - isolate the bad hit rather than lose the batch
                written = await self._write_one_by_one(batch)
            self.written += written
            return written

    async def _write(self, batch: list[TrackedHit]) -> int:
        async with self.database.transaction() as session:
            return await service.record_hits(session, batch, self.rules)

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
        self._closed = True
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
            self._task = None
        while self._buffer:
            await self.flush()
        self._closed = False


class ClickTargets:
    """Link and recipient lookups for the redirect, cached: a link's URL and campaign never change."""

    def __init__(self, database: Database, *, size: int = 50_000) -> None:
        self.database = database
        self.size = size
        self._cache: OrderedDict[tuple[int, int], ClickTarget] = OrderedDict()

    async def find(self, recipient_id: int, link_id: int) -> ClickTarget | None:
        key = (recipient_id, link_id)
        target = self._cache.get(key)
        if target is not None:
            self._cache.move_to_end(key)
            return target
        async with self.database.transaction() as session:
            target = await service.find_click_target(session, recipient_id, link_id)
        if target is not None:  # misses are not cached: a link may be registered a moment later
            self._cache[key] = target
            if len(self._cache) > self.size:
                self._cache.popitem(last=False)
        return target


def recorder_for(app: Any) -> EventRecorder:
    """The app's recorder, created on first use (tests drive the app without running its lifespan)."""
    recorder = getattr(app.state, "tracking_recorder", None)
    if recorder is None:
        recorder = app.state.tracking_recorder = EventRecorder(app.state.db, app.state.settings)
    return recorder


def click_targets_for(app: Any) -> ClickTargets:
    targets = getattr(app.state, "tracking_click_targets", None)
    if targets is None:
        targets = app.state.tracking_click_targets = ClickTargets(app.state.db)
    return targets
