"""Opens and clicks answered in front of the app (ClarionApp → serve_fast), and the writer and caches behind them."""

from __future__ import annotations

import asyncio
import time
from datetime import timedelta
from typing import Any

import httpx
from fastapi import FastAPI

from clarion.app import create_app
from clarion.db import Database
from clarion.kit.clock import clock, utcnow
from clarion.tracking.machine import RequestFacts
from clarion.tracking.public_endpoints import PIXEL_GIF
from clarion.tracking.recorder import ClickTargets, EventRecorder, click_targets_for, recorder_for
from clarion.tracking.service import TrackedHit
from tests.tracking.helpers import (
    BASE,
    click_path,
    events,
    open_path,
    register_link,
    sent_campaign,
    unsubscribe_path,
)

HUMAN_UA = "Mozilla/5.0 (Macintosh; Intel Mac OS X 14_5) AppleWebKit/605.1.15 (KHTML, like Gecko)"
UNREACHABLE_DB = "postgresql+psycopg://clarion@127.0.0.1:9/nowhere?connect_timeout=2"


class _StackEntries:
    """The outermost user middleware: notes the path of every request that enters the app's middleware stack."""

    def __init__(self, app: Any, seen: list[str]) -> None:
        self.app, self.seen = app, seen

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            self.seen.append(f"{scope['method']} {scope['path']}")
        await self.app(scope, receive, send)


def _watched_app(settings, db: Database) -> tuple[FastAPI, list[str]]:  # type: ignore[no-untyped-def]
    app = create_app(settings, database=db)
    seen: list[str] = []
    app.add_middleware(_StackEntries, seen=seen)
    return app, seen


def _client(app: Any, **transport: Any) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app, **transport), base_url=BASE,
                             headers={"User-Agent": HUMAN_UA})


async def test_opens_and_clicks_skip_the_middleware_stack_for_get_and_head(api, db, settings) -> None:  # type: ignore[no-untyped-def]
    [ann] = await sent_campaign(api, db, ["ann@example.com"])
    link = await register_link(db, api.tenant.id, ann.campaign_id, "https://shop.example/sale")
    app, seen = _watched_app(settings, db)
    clock.advance(timedelta(minutes=5))  # well after the send: the clicks are not suspected of being a scanner's
    async with _client(app) as client:
        got = await client.get(open_path(ann.id))
        head = await client.head(open_path(ann.id))
        clicked = await client.get(click_path(ann.id, link))
        head_click = await client.head(click_path(ann.id, link))
        missing = await client.get(click_path(ann.id, 999_999_999))
    assert (got.status_code, got.content, got.headers["content-type"]) == (200, PIXEL_GIF, "image/gif")
    assert (head.status_code, head.content) == (200, b"")
    assert head.headers["content-length"] == str(len(PIXEL_GIF)) and head.headers["content-type"] == "image/gif"
    assert head.headers["cache-control"] == got.headers["cache-control"]
    for redirect in (clicked, head_click):
        assert (redirect.status_code, redirect.headers["location"]) == (302, "https://shop.example/sale")
    assert missing.status_code == 404 and "location" not in missing.headers
    assert seen == []
    await recorder_for(app).flush()
    opens = [e.metadata_["flags"] for e in await events(db, ann.id, "opened")]
    clicks = [e.metadata_["flags"] for e in await events(db, ann.id, "clicked")]
    assert opens == [{"machine": False}, {"machine": True, "reason": "head_request"}]
    assert clicks == [{"machine": False}, {"machine": True, "reason": "head_request"}]


async def test_every_other_request_passes_through_the_app_untouched(api, db, settings, tenant) -> None:  # type: ignore[no-untyped-def]
    [ann] = await sent_campaign(api, db, ["ann@example.com"])
    app, seen = _watched_app(settings, db)
    pixel = open_path(ann.id)
    async with _client(app) as client:
        not_allowed = await client.post(pixel)                                   # only GET and HEAD are tracked
        nested = await client.get("/t/o/a/b.gif")                                # a token is one path segment
        no_token = await client.get("/t/c/")
        unsubscribe = await client.get(unsubscribe_path(ann.id))
        webhook = await client.post("/webhooks/someprovider", json={"event": "delivered"})
        api_call = await client.get("/api/v1/campaigns", headers=tenant.headers)
    assert seen == [f"POST {pixel}", "GET /t/o/a/b.gif", "GET /t/c/", f"GET {unsubscribe_path(ann.id)}",
                    "POST /webhooks/someprovider", "GET /api/v1/campaigns"]
    assert not_allowed.status_code == 405 and not_allowed.headers["content-type"] == "application/problem+json"
    assert nested.status_code == 404 and no_token.status_code == 404
    assert unsubscribe.status_code == 200 and "Unsubscribe" in unsubscribe.text
    assert webhook.status_code != 500
    assert api_call.status_code == 200


async def test_the_fast_path_answers_exactly_as_the_router_would(api, db, settings) -> None:  # type: ignore[no-untyped-def]
    [ann] = await sent_campaign(api, db, ["ann@example.com"])
    link = await register_link(db, api.tenant.id, ann.campaign_id, "https://shop.example/sale?a=1&b=2")
    app = create_app(settings, database=db)

    async def through_the_router(scope: Any, receive: Any, send: Any) -> None:
        await FastAPI.__call__(app, scope, receive, send)  # what ClarionApp adds, left out

    requests = [("GET", open_path(ann.id)), ("HEAD", open_path(ann.id)), ("GET", "/t/o/forged.gif"),
                ("GET", click_path(ann.id, link)), ("HEAD", click_path(ann.id, link)),
                ("GET", click_path(ann.id, 999_999_999)), ("HEAD", "/t/c/forged")]
    answers: dict[str, list[tuple[int, list[tuple[str, str]], bytes]]] = {}
    for name, target in (("fast", app), ("router", through_the_router)):
        async with _client(target) as client:
            answers[name] = [(r.status_code, sorted(r.headers.items()), r.content)
                             for r in [await client.request(method, path) for method, path in requests]]
    assert answers["fast"] == answers["router"]
    assert [status for status, _, _ in answers["fast"]] == [200, 200, 200, 302, 302, 404, 404]
    await recorder_for(app).flush()
    assert len(await events(db, ann.id, "opened")) == 4 and len(await events(db, ann.id, "clicked")) == 4


async def test_behind_a_path_prefix_the_fast_path_still_answers(api, db, settings) -> None:  # type: ignore[no-untyped-def]
    [ann] = await sent_campaign(api, db, ["ann@example.com"])
    app, seen = _watched_app(settings, db)
    async with _client(app, root_path="/clarion") as client:
        pixel = await client.get("/clarion" + open_path(ann.id))
        health = await client.get("/clarion/healthz")
    assert (pixel.status_code, pixel.content) == (200, PIXEL_GIF)
    assert health.status_code == 200
    assert seen == ["GET /clarion/healthz"]
    await recorder_for(app).flush()
    assert len(await events(db, ann.id, "opened")) == 1


async def test_a_click_without_its_database_is_a_503_unless_the_link_is_cached(api, db, settings) -> None:  # type: ignore[no-untyped-def]
    [ann, bob] = await sent_campaign(api, db, ["ann@example.com", "bob@example.com"])
    link = await register_link(db, api.tenant.id, ann.campaign_id, "https://shop.example/sale")
    app = create_app(settings, database=db)
    unreachable = Database(UNREACHABLE_DB)
    try:
        async with _client(app) as client:
            assert (await client.get(click_path(ann.id, link))).status_code == 302  # now cached
            click_targets_for(app).database = unreachable  # the database goes away
            cached = await client.get(click_path(ann.id, link))
            uncached = await client.get(click_path(bob.id, link))
            uncached_head = await client.head(click_path(bob.id, link))
    finally:
        await unreachable.dispose()
    assert (cached.status_code, cached.headers["location"]) == (302, "https://shop.example/sale")
    assert uncached.status_code == 503 and "location" not in uncached.headers
    assert uncached.headers["content-type"] == "application/problem+json"
    assert uncached.headers["retry-after"] == "1"
    assert uncached.json()["code"] == "database_unreachable"
    assert (uncached_head.status_code, uncached_head.content) == (503, b"")
    await recorder_for(app).flush()
    assert len(await events(db, ann.id, "clicked")) == 2 and await events(db, bob.id, "clicked") == []


# --- the click-target cache -----------------------------------------------------------------------------------


async def test_click_targets_are_read_once_then_served_from_memory(api, db) -> None:  # type: ignore[no-untyped-def]
    [ann, bob] = await sent_campaign(api, db, ["ann@example.com", "bob@example.com"])
    link = await register_link(db, api.tenant.id, ann.campaign_id, "https://shop.example/sale")
    targets = ClickTargets(db)
    first = await targets.find(ann.id, link)
    assert first is not None and first.url == "https://shop.example/sale" and targets.lookups == 1
    assert targets.cached(ann.id, link) == first
    assert await targets.find(ann.id, link) == first and targets.lookups == 1
    # Bob's own row is read, the link's is not read again.
    assert (await targets.find(bob.id, link)).recipient_id == bob.id and targets.lookups == 2
    assert targets.cached(bob.id, link) is not None


async def test_clicks_that_miss_together_share_one_lookup(api, db) -> None:  # type: ignore[no-untyped-def]
    sent = await sent_campaign(api, db, [f"r{n}@example.com" for n in range(5)])
    [other] = await sent_campaign(api, db, ["other@example.com"])
    link = await register_link(db, api.tenant.id, sent[0].campaign_id, "https://shop.example/sale")
    targets = ClickTargets(db)
    found = await asyncio.gather(*(targets.find(r.id, link) for r in sent), targets.find(other.id, link),
                                 targets.find(10**12, link), targets.find(sent[0].id, link + 1000))
    assert [t.recipient_id for t in found[:5]] == [r.id for r in sent]
    assert {t.url for t in found[:5]} == {"https://shop.example/sale"}
    # Another campaign's recipient, one that does not exist and a link that does not exist: refused all the same.
    assert found[5:] == [None, None, None]
    assert targets.lookups == 1
    assert all(targets.cached(r.id, link) is not None for r in sent)
    # A miss after that lookup queues a lookup of its own.
    assert await targets.find(sent[0].id, link + 1000) is None and targets.lookups == 2


async def test_a_link_not_found_is_not_remembered_as_missing(api, db) -> None:  # type: ignore[no-untyped-def]
    [ann] = await sent_campaign(api, db, ["ann@example.com"])
    targets = ClickTargets(db)
    other = await register_link(db, api.tenant.id, ann.campaign_id, "https://shop.example/first")
    upcoming = other + 1  # the id the next link of this database will get, on both backends
    assert await targets.find(ann.id, upcoming) is None
    assert await register_link(db, api.tenant.id, ann.campaign_id, "https://shop.example/second") == upcoming
    found = await targets.find(ann.id, upcoming)
    assert found is not None and found.url == "https://shop.example/second"


async def test_a_cached_link_is_still_refused_to_a_recipient_of_another_campaign(api, db) -> None:  # type: ignore[no-untyped-def]
    [ann] = await sent_campaign(api, db, ["ann@example.com"])
    [bob] = await sent_campaign(api, db, ["bob@example.com"])
    link = await register_link(db, api.tenant.id, ann.campaign_id, "https://shop.example/sale")
    targets = ClickTargets(db)
    assert await targets.find(ann.id, link) is not None
    assert await targets.find(bob.id, link) is None
    assert targets.cached(bob.id, link) is None  # both halves are cached now, and still refused


async def test_the_cache_is_bounded_and_forgets_the_least_recently_used(api, db) -> None:  # type: ignore[no-untyped-def]
    [ann] = await sent_campaign(api, db, ["ann@example.com"])
    links = [await register_link(db, api.tenant.id, ann.campaign_id, f"https://shop.example/{n}") for n in range(3)]
    targets = ClickTargets(db, size=2)
    for link in links[:2]:
        await targets.find(ann.id, link)
    await targets.find(ann.id, links[0])  # used again: links[1] is now the least recently used
    await targets.find(ann.id, links[2])
    assert targets.cached(ann.id, links[0]) is not None and targets.cached(ann.id, links[2]) is not None
    assert targets.cached(ann.id, links[1]) is None
    lookups = targets.lookups
    assert (await targets.find(ann.id, links[1])).url == "https://shop.example/1"
    assert targets.lookups == lookups + 1


# --- the event writer -----------------------------------------------------------------------------------------


def _hits(recipient_id: int, count: int) -> list[TrackedHit]:
    facts = RequestFacts(method="GET", user_agent=HUMAN_UA, ip="203.0.113.9")
    return [TrackedHit("open", recipient_id, facts, utcnow()) for _ in range(count)]


async def test_a_writer_that_falls_behind_slows_the_next_request_until_it_has_written(api, db, settings) -> None:  # type: ignore[no-untyped-def]
    [ann] = await sent_campaign(api, db, ["ann@example.com"])
    recorder = EventRecorder(db, settings, max_lag=0.05)
    recorder.interval = 60.0  # the writer sleeps: nothing but a full batch or a slowed request wakes it
    try:
        first, second = _hits(ann.id, 2)
        assert recorder.offer(first)
        await asyncio.sleep(0.08)
        assert recorder.lag > 0.05
        assert not recorder.offer(second) and recorder.buffered == 1  # refused: the writer is behind
        started = time.monotonic()
        await recorder.add(second)
        assert time.monotonic() - started < 0.05 * 20  # answered once the batch was in, not at a timeout
        assert (recorder.slowed, recorder.written, recorder.buffered) == (1, 2, 0)
        assert len(await events(db, ann.id, "opened")) == 2  # durable before add() returned
    finally:
        await recorder.close()


async def test_a_writer_behind_writes_larger_transactions(api, db, settings) -> None:  # type: ignore[no-untyped-def]
    [ann] = await sent_campaign(api, db, ["ann@example.com"])
    recorder = EventRecorder(db, settings, batch_size=2, backlog_batch=3)
    try:
        for hit in _hits(ann.id, 7):
            assert recorder.offer(hit)
        assert await recorder.flush() == 7
        assert recorder.flushes == 3  # 3 + 3 + 1, not 2 + 2 + 2 + 1
    finally:
        await recorder.close()
    assert len(await events(db, ann.id, "opened")) == 7


async def test_while_the_database_is_away_requests_are_not_slowed_and_no_hit_is_lost(api, db, settings) -> None:  # type: ignore[no-untyped-def]
    [ann] = await sent_campaign(api, db, ["ann@example.com"])
    unreachable = Database(UNREACHABLE_DB)
    recorder = EventRecorder(unreachable, settings, max_lag=0.01)
    recorder.interval = 0.01
    try:
        first, second = _hits(ann.id, 2)
        assert recorder.offer(first)
        for _ in range(500):
            if recorder.failing:
                break
            await asyncio.sleep(0.01)
        assert recorder.failing and recorder.buffered == 1
        started = time.monotonic()
        await recorder.add(second)
        assert time.monotonic() - started < 0.01 * 5 and recorder.slowed == 0 and recorder.buffered == 2
        recorder.database = db  # the database is back
    finally:
        await recorder.close()
        await unreachable.dispose()
    assert (recorder.written, recorder.dropped) == (2, 0)
    assert len(await events(db, ann.id, "opened")) == 2


async def test_a_client_already_stored_as_seen_is_neither_looked_up_nor_written_again(api, db, settings) -> None:  # type: ignore[no-untyped-def]
    from sqlalchemy import event

    [ann] = await sent_campaign(api, db, ["ann@example.com"])
    link = await register_link(db, api.tenant.id, ann.campaign_id, "https://shop.example/sale")
    phone = RequestFacts(method="GET", user_agent=HUMAN_UA, ip="203.0.113.9")
    recorder = EventRecorder(db, settings)
    statements: list[str] = []

    def note(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        statements.append(statement)

    event.listen(db.engine.sync_engine, "before_cursor_execute", note)
    try:
        assert recorder.offer(TrackedHit("open", ann.id, phone, utcnow()))
        await recorder.flush()
        first_batch = [s for s in statements if "tracking_clients" in s]
        statements.clear()
        # Seconds after the send: only a client seen before makes this click a human's.
        assert recorder.offer(TrackedHit("click", ann.id, phone, utcnow(), link_id=link,
                                         url="https://shop.example/sale"))
        await recorder.flush()
        second_batch = [s for s in statements if "tracking_clients" in s]
    finally:
        event.remove(db.engine.sync_engine, "before_cursor_execute", note)
        await recorder.close()
    assert len(first_batch) == 1 and first_batch[0].lstrip().upper().startswith("INSERT")
    assert second_batch == []
    [click] = await events(db, ann.id, "clicked")
    assert click.metadata_["flags"] == {"machine": False}


def test_a_writer_on_its_own_schedule_never_counts_as_behind(settings) -> None:  # type: ignore[no-untyped-def]
    slow = settings.model_copy(update={"tracking_flush_interval": 2.0})
    assert EventRecorder(Database("sqlite+aiosqlite://"), slow).max_lag >= 2 * 2.0
