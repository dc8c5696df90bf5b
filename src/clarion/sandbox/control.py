"""What every provider sandbox shares: a record of the requests it received, the knobs tests turn, and the
status callbacks it posts on its own."""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Coroutine
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

import httpx

if TYPE_CHECKING:
    from starlette.requests import Request

# What the next request(s) should meet: the provider's throttling/temporary error, a permanent refusal of
# the message (invalid number, unknown template…), or the provider's "this person opted out" error.
Failure = Literal["transient", "permanent", "opt_out"]


@dataclass(frozen=True, slots=True)
class RecordedRequest:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes
    # The body decoded the way the provider's API takes it: a JSON value, or a form as a dict.
    data: Any = None


@dataclass
class SandboxControl:
    """Shared by a sandbox app and whoever drives it (a test, the demo)."""

    requests: list[RecordedRequest] = field(default_factory=list)
    failures: deque[Failure] = field(default_factory=deque)
    # Added to every API response: the fan-out bench runs the sandboxes at a provider's real latency.
    latency_seconds: float = 0.0
    # Set by a test or the demo: where status callbacks go when the sandbox delivers them itself.
    webhook_url: str | None = None
    _counter: int = 0

    def fail_next(self, kind: Failure, times: int = 1) -> None:
        self.failures.extend([kind] * times)

    def next_failure(self) -> Failure | None:
        return self.failures.popleft() if self.failures else None

    def next_id(self) -> int:
        self._counter += 1
        return self._counter

    async def pause(self) -> None:
        if self.latency_seconds > 0:
            await asyncio.sleep(self.latency_seconds)

    def record(self, request: Request, body: bytes = b"", data: Any = None) -> None:
        self.requests.append(RecordedRequest(request.method, request.url.path, dict(request.headers), body, data))

    def sent_to(self, path_suffix: str) -> list[RecordedRequest]:
        return [r for r in self.requests if r.path.endswith(path_suffix)]


# Status callbacks posted at once. Any more would wait in httpx's connection pool, whose scheduling cost grows with
# its queue: a demo's 250 messages × 3 statuses spent most of the process's CPU there, starving the app posted to.
CALLBACKS_IN_FLIGHT = 8


class Callbacks:
    """Status callbacks on their way: tasks kept referenced until done, one client shared while any runs."""

    def __init__(self, provider: str) -> None:
        self.provider = provider
        self.tasks: set[asyncio.Task[None]] = set()
        self._client: httpx.AsyncClient | None = None
        self._in_flight = asyncio.Semaphore(CALLBACKS_IN_FLIGHT)

    def start(self, delivery: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(delivery)
        self.tasks.add(task)
        task.add_done_callback(self._finished)

    def _finished(self, task: asyncio.Task[None]) -> None:
        self.tasks.discard(task)
        if not self.tasks and self._client is not None:
            client, self._client = self._client, None
            asyncio.get_running_loop().create_task(client.aclose())

    async def post(self, url: str, headers: dict[str, str], body: bytes) -> int | None:
        """The HTTP status `url` answered; None (logged) when the call failed — providers do not retry it either."""
        if self._client is None:
            self._client = httpx.AsyncClient(timeout=10.0)
        try:
            async with self._in_flight:
                response = await self._client.post(url, headers=headers, content=body)
        except httpx.HTTPError as exc:
            logging.getLogger(f"clarion.sandbox.{self.provider}").warning(
                "%s sandbox: status callback to %s failed: %s", self.provider, url, exc)
            return None
        return response.status_code

    async def settle(self) -> None:
        """Wait for every callback under way."""
        while self.tasks:
            await asyncio.gather(*list(self.tasks), return_exceptions=True)

    async def close(self) -> None:
        for task in list(self.tasks):
            task.cancel()
        if self._client is not None:
            client, self._client = self._client, None
            await client.aclose()
