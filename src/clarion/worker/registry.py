"""Jobs and ticks by name. Domains register here; the worker never imports a domain, it looks names up."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from sqlalchemy.ext.asyncio import AsyncSession

if TYPE_CHECKING:
    from clarion.config import Settings
    from clarion.db import Database

JobFn = Callable[[AsyncSession, dict[str, Any]], Awaitable[Any]]
TickFn = Callable[[AsyncSession], Awaitable[Any]]
# A long-running loop owns its transactions (it gets the Database, not a session) and returns once `stop` is set.
LoopFn = Callable[["Database", "Settings", asyncio.Event], Awaitable[None]]

DEFAULT_MAX_ATTEMPTS = 5


@dataclass(frozen=True)
class JobSpec:
    name: str
    fn: JobFn
    max_attempts: int = DEFAULT_MAX_ATTEMPTS


@dataclass(frozen=True)
class TickSpec:
    name: str
    interval: timedelta
    fn: TickFn
    # A singleton tick runs once per interval across every worker; otherwise each worker runs it on its own.
    singleton: bool = True


@dataclass(frozen=True)
class LoopSpec:
    """Work that runs continuously in every worker (the send pipeline's dispatch): unlike a tick it keeps
    its own pace and transactions, e.g. to commit a claim before talking to a provider."""

    name: str
    fn: LoopFn


@dataclass
class Registry:
    jobs: dict[str, JobSpec] = field(default_factory=dict)
    ticks: dict[str, TickSpec] = field(default_factory=dict)
    loops: dict[str, LoopSpec] = field(default_factory=dict)

    def register_job(self, name: str, fn: JobFn, *, max_attempts: int = DEFAULT_MAX_ATTEMPTS) -> JobFn:
        if max_attempts < 1:
            raise ValueError("max_attempts must be at least 1")
        existing = self.jobs.get(name)
        # Re-importing a module registers the same function again; two different functions under one name is a bug.
        if existing is not None and _qualname(existing.fn) != _qualname(fn):
            raise ValueError(f"job {name!r} is already registered to {_qualname(existing.fn)}")
        self.jobs[name] = JobSpec(name, fn, max_attempts)
        return fn

    def job(self, name: str, *, max_attempts: int = DEFAULT_MAX_ATTEMPTS) -> Callable[[JobFn], JobFn]:
        def decorate(fn: JobFn) -> JobFn:
            return self.register_job(name, fn, max_attempts=max_attempts)

        return decorate

    def register_tick(self, name: str, interval: timedelta | float, fn: TickFn, *, singleton: bool = True) -> TickFn:
        every = interval if isinstance(interval, timedelta) else timedelta(seconds=interval)
        if every <= timedelta(0):
            raise ValueError("a tick interval must be positive")
        existing = self.ticks.get(name)
        if existing is not None and _qualname(existing.fn) != _qualname(fn):
            raise ValueError(f"tick {name!r} is already registered to {_qualname(existing.fn)}")
        self.ticks[name] = TickSpec(name, every, fn, singleton)
        return fn

    def tick(self, name: str, interval: timedelta | float, *, singleton: bool = True) -> Callable[[TickFn], TickFn]:
        def decorate(fn: TickFn) -> TickFn:
            return self.register_tick(name, interval, fn, singleton=singleton)

        return decorate

    def register_loop(self, name: str, fn: LoopFn) -> LoopFn:
        existing = self.loops.get(name)
        if existing is not None and _qualname(existing.fn) != _qualname(fn):
            raise ValueError(f"loop {name!r} is already registered to {_qualname(existing.fn)}")
        self.loops[name] = LoopSpec(name, fn)
        return fn


def _qualname(fn: Callable[..., Any]) -> str:
    return f"{getattr(fn, '__module__', '?')}.{getattr(fn, '__qualname__', repr(fn))}"


# The process-wide registry that domains' tasks.py modules fill at import time.
registry = Registry()


def register_job(name: str, fn: JobFn, *, max_attempts: int = DEFAULT_MAX_ATTEMPTS) -> JobFn:
    return registry.register_job(name, fn, max_attempts=max_attempts)


def job(name: str, *, max_attempts: int = DEFAULT_MAX_ATTEMPTS) -> Callable[[JobFn], JobFn]:
    """Decorator: `@job("delivery.send_webhook")` on `async def fn(session, args)`."""
    return registry.job(name, max_attempts=max_attempts)


def register_tick(name: str, interval: timedelta | float, fn: TickFn, *, singleton: bool = True) -> TickFn:
    return registry.register_tick(name, interval, fn, singleton=singleton)


def tick(name: str, interval: timedelta | float, *, singleton: bool = True) -> Callable[[TickFn], TickFn]:
    """Decorator: `@tick("campaign.dispatch", 5)` on `async def fn(session)`."""
    return registry.tick(name, interval, singleton=singleton)


def register_loop(name: str, fn: LoopFn) -> LoopFn:
    """`async def fn(database, settings, stop)`, run by every worker until `stop` is set (restarted if it raises)."""
    return registry.register_loop(name, fn)
