"""What the providers that call an HTTP API share (WhatsApp, Twilio, Telegram, Web Push): one pooled httpx client
per provider, a batch sent by a fixed set of workers, and the reading of an answer — transport trouble, 429 and 5xx
mean "try again later", with the wait a Retry-After asks for."""

from __future__ import annotations

import asyncio
import email.utils
import re
import time
from collections.abc import Awaitable, Callable
from typing import Any, ClassVar, Protocol, TypeVar, cast

import httpx
from pydantic import BaseModel

from clarion.delivery.channels.base import ChannelProvider, OutgoingMessage, ProviderContext, SendResult

C = TypeVar("C", bound=BaseModel)
T = TypeVar("T")

_DELTA_SECONDS = re.compile(r"^\d+(\.\d+)?$")


class HttpSettings(Protocol):
    """The fields every HTTP provider's config has (each config declares them, with its own bounds)."""

    @property
    def max_concurrency(self) -> int: ...  # requests in flight for one batch, and the connection pool's size

    @property
    def timeout(self) -> float: ...


async def gather_bounded(count: int, concurrency: int, work: Callable[[int], Awaitable[T]]) -> list[T]:
    """[await work(0), …, await work(count - 1)] with at most `concurrency` in flight: a fixed set of workers pulls
    positions from one iterator, so there is no task or semaphore round-trip per item."""
    results: list[T | None] = [None] * count
    positions = iter(range(count))

    async def drain() -> None:
        for i in positions:
            results[i] = await work(i)

    workers = min(concurrency, count)
    if workers == 1:
        await drain()  # no gather for a lone worker: most replies and small batches
    elif workers:
        await asyncio.gather(*(drain() for _ in range(workers)))
    # A worker that raised has made gather raise: here every position holds its result.
    return cast(list[T], results)


def transient_status(status: int) -> bool:
    """429 Too Many Requests and 5xx are the service's trouble, not the message's."""
    return status == 429 or status >= 500


def json_object(response: httpx.Response) -> dict[str, Any] | None:
    """The body when it is a JSON object; None for anything else (an HTML error page from a proxy, a list)."""
    try:
        data = response.json()
    except ValueError:
        return None
    return data if isinstance(data, dict) else None


def retry_after_seconds(value: str | None) -> float | None:
    """Retry-After as seconds: delta-seconds or an HTTP date (RFC 9110 §10.2.3); None when absent or unreadable."""
    if not value:
        return None
    value = value.strip()
    if _DELTA_SECONDS.match(value):
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


def retry_after(response: httpx.Response) -> float | None:
    return retry_after_seconds(response.headers.get("retry-after"))


def transport_error(exc: httpx.HTTPError, service: str) -> str:
    """The error of a request that got no answer from `service` (always transient)."""
    if isinstance(exc, httpx.TimeoutException):
        return f"{service} timed out ({type(exc).__name__})"
    return f"cannot reach {service}: {type(exc).__name__}: {exc}"


class HttpChannelProvider(ChannelProvider[C]):
    """A provider that sends each message with one request (`_send_one`) over its own pooled client: `send` runs
    a batch through `config.max_concurrency` workers; `close` drops the client, which the next use builds again.
    A provider whose batch takes another shape (Web Push fans a message out to every subscription) overrides
    `send` and uses `_http` and `gather_bounded` itself."""

    # Seconds opening a connection may take at most (config.timeout when that is shorter).
    connect_timeout: ClassVar[float] = 10.0

    def __init__(self, config: C, context: ProviderContext | None = None) -> None:
        super().__init__(config, context)
        self._client: httpx.AsyncClient | None = None

    @property
    def _settings(self) -> HttpSettings:
        return cast(HttpSettings, self.config)

    def _client_options(self) -> dict[str, Any]:
        """More httpx.AsyncClient arguments: the credentials and headers every request carries."""
        return {}

    def _http(self) -> httpx.AsyncClient:
        if self._client is None or self._client.is_closed:
            pool, timeout = self._settings.max_concurrency, self._settings.timeout
            self._client = httpx.AsyncClient(
                timeout=httpx.Timeout(timeout, connect=min(timeout, self.connect_timeout)),
                limits=httpx.Limits(max_connections=pool, max_keepalive_connections=pool),
                **self._client_options(),
            )
        return self._client

    async def close(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            await client.aclose()

    async def send(self, batch: list[OutgoingMessage]) -> list[SendResult]:
        client = self._http()
        return await gather_bounded(len(batch), self._settings.max_concurrency,
                                    lambda i: self._send_one(client, batch[i]))

    async def _send_one(self, client: httpx.AsyncClient, message: OutgoingMessage) -> SendResult:
        """One message, one request; a failure is a result, never raised."""
        raise NotImplementedError(f"{type(self).__name__} sends no single messages: it overrides send()")
