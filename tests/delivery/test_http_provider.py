"""The pieces every HTTP provider shares (channels/http_provider.py): the bounded worker pool a batch goes through,
the Retry-After reading and what counts as the service's trouble. The providers' own tests cover them end to end
over real HTTP; these pin the edges."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import pytest

from clarion.delivery.channels.http_provider import gather_bounded, retry_after_seconds, transient_status


def test_retry_after_takes_seconds_or_an_http_date() -> None:
    assert retry_after_seconds("120") == 120.0
    assert retry_after_seconds(" 1.5 ") == 1.5
    later = format_datetime(datetime.now(UTC) + timedelta(seconds=90), usegmt=True)
    assert 80 < (retry_after_seconds(later) or 0) <= 90
    earlier = format_datetime(datetime.now(UTC) - timedelta(seconds=90), usegmt=True)
    assert retry_after_seconds(earlier) == 0.0
    for unreadable in ("soon", "-5", "inf", "nan", "", None):
        assert retry_after_seconds(unreadable) is None, unreadable


def test_429_and_5xx_are_the_services_trouble() -> None:
    statuses = (200, 400, 401, 403, 404, 410, 429, 500, 502, 503)
    assert [s for s in statuses if transient_status(s)] == [429, 500, 502, 503]


@pytest.mark.parametrize(("count", "concurrency"), [(0, 5), (1, 5), (7, 1), (40, 6), (3, 50)])
async def test_gather_bounded_keeps_order_and_never_runs_more_than_asked(count: int, concurrency: int) -> None:
    in_flight = peak = 0

    async def work(i: int) -> int:
        nonlocal in_flight, peak
        in_flight += 1
        peak = max(peak, in_flight)
        await asyncio.sleep(0.001 * (i % 3))  # uneven: later items finish before earlier ones
        in_flight -= 1
        return i * i

    assert await gather_bounded(count, concurrency, work) == [i * i for i in range(count)]
    assert peak == min(count, concurrency)


async def test_gather_bounded_raises_what_a_worker_raised() -> None:
    async def work(i: int) -> int:
        if i == 3:
            raise RuntimeError("boom")
        return i

    with pytest.raises(RuntimeError, match="boom"):
        await gather_bounded(10, 4, work)
