"""What every provider sandbox shares: a record of the requests it received and the knobs tests turn."""

from __future__ import annotations

import asyncio
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Literal

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

    def record(self, method: str, path: str, headers: dict[str, str], body: bytes, data: Any) -> None:
        self.requests.append(RecordedRequest(method, path, headers, body, data))

    def sent_to(self, path_suffix: str) -> list[RecordedRequest]:
        return [r for r in self.requests if r.path.endswith(path_suffix)]
