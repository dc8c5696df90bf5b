"""`make demo`'s WhatsApp and SMS campaigns, on both databases: the demo's seeding against a served Clarion whose
settings mount the built-in sandboxes; its embedded worker sends through them, and their signed status callbacks
come back over HTTP to the app's own /webhooks/ until the campaigns show delivered (and read, on WhatsApp)."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

import httpx
import pytest

from clarion.app import create_app
from clarion.cli.demo import ensure_demo_tenant, seed
from clarion.config import Settings
from clarion.db import Database
from clarion.migrate import upgrade
from tests.conftest import PG_ADMIN_URL, _pg_admin
from tests.fakes.serving import bound_socket, serve_asgi

DEMO_CONTACTS = 300


@pytest.fixture
async def own_database(backend: str, request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[str]:
    """A database of this test's own: the embedded worker sends every tenant's due recipients, and other tests'
    running campaigns must neither slow it nor be sent by it."""
    if backend == "sqlite":
        url = f"sqlite+aiosqlite:///{tmp_path / 'demo.db'}"
        upgrade(url)
        yield url
        return
    request.getfixturevalue("pg_url")  # skips (or fails in CI) as every PostgreSQL test does without a server
    name = f"clarion_demo_{uuid.uuid4().hex[:10]}"
    with _pg_admin() as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    url = f"{PG_ADMIN_URL.rsplit('/', 1)[0]}/{name}".replace("postgresql://", "postgresql+psycopg://", 1)
    upgrade(url)
    yield url
    with _pg_admin() as admin:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


async def _stats_until(api: httpx.AsyncClient, campaign_id: str, done: Callable[[dict[str, Any]], bool],
                       timeout: float = 60.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        response = await api.get(f"/api/v1/campaigns/{campaign_id}/stats")
        assert response.status_code == 200, response.text
        stats: dict[str, Any] = response.json()
        if done(stats) or time.monotonic() > deadline:
            return stats
        await asyncio.sleep(0.2)


async def test_the_demo_whatsapp_and_sms_campaigns_reach_delivered_and_read_through_the_apps_webhooks(
        own_database: str, tmp_path: Path) -> None:
    sock = bound_socket()
    base_url = f"http://127.0.0.1:{sock.getsockname()[1]}"
    settings = Settings(data_dir=tmp_path, database_url=own_database, secret_key="demo-secret-" + "x" * 32,
                        base_url=base_url, sandbox_providers=True, worker_poll_interval=0.2)
    db = Database(settings.resolved_database_url)
    app = create_app(settings, database=db, embedded_worker=True)
    try:
        demo = await ensure_demo_tenant(settings, db)
        async with serve_asgi(app, sock=sock, lifespan="on") as served, httpx.AsyncClient(
                base_url=served, headers={"Authorization": f"Bearer {demo.api_key}"}, timeout=120) as api:
            seeded = await seed(api, DEMO_CONTACTS, base_url=served)
            whatsapp = await _stats_until(api, seeded["whatsapp"],
                                          lambda s: s["total_target"] > 0 and s["read"] == s["total_target"])
            sms = await _stats_until(api, seeded["sms"],
                                     lambda s: s["total_target"] > 0 and s["delivered"] == s["total_target"])
            calls = {provider: (await api.get("/api/v1/webhook-calls",
                                              params={"provider": provider, "limit": 500})).json()["items"]
                     for provider in ("whatsapp", "twilio")}
            campaigns = {c["name"]: c for c in (await api.get("/api/v1/campaigns")).json()["items"]}
            sandboxes = app.state.sandboxes
    finally:
        await db.dispose()

    # WhatsApp: seed 002's campaign, sent as templates through the sandbox, read by everyone it reached.
    assert whatsapp["status"] in ("running", "completed")  # completed once the worker's completion tick has run
    reached = whatsapp["total_target"]
    assert 0 < reached <= 250
    assert (whatsapp["sent"], whatsapp["delivered"], whatsapp["read"]) == (reached, reached, reached)
    assert (whatsapp["delivery_rate"], whatsapp["read_rate"]) == (100.0, 100.0)
    templates = [r.data for r in sandboxes.whatsapp.requests if r.path.endswith("/messages")]
    assert len(templates) == reached and {t["template"]["name"] for t in templates} == {"summer_sale_promo"}
    # The statuses came back as Meta's signed calls, each logged and applied.
    assert len(calls["whatsapp"]) >= 3 * reached
    assert all(c["outcome"].get("unknown", 0) == 0 for c in calls["whatsapp"] + calls["twilio"]), calls

    # SMS: the running campaign went out through the Twilio sandbox and every message reported delivered.
    assert sms["status"] in ("running", "completed")
    assert sms["sent"] == sms["delivered"] == sms["total_target"] > 0
    assert len(sandboxes.twilio.sent_to("/Messages.json")) == sms["sent"]
    statuses = [parse_qs(c["body"])["MessageStatus"][0] for c in calls["twilio"]]
    assert statuses.count("delivered") == sms["sent"]
    assert campaigns["Flash sale SMS"]["status"] == "scheduled"  # tomorrow's: nothing of it went out


async def test_the_sandboxes_are_served_only_when_the_setting_asks(settings: Settings, db: Database) -> None:
    probes = {"/sandbox/whatsapp/v21.0/106540352242922/messages": {"json": {}},
              f"/sandbox/twilio/2010-04-01/Accounts/{'AC' + '0' * 32}/Messages.json": {"data": {}}}
    for enabled, expected in ((False, 404), (True, 401)):
        app = create_app(settings.model_copy(update={"sandbox_providers": enabled}), database=db)
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://clarion.test") as c:
            for path, body in probes.items():
                response = await c.post(path, **body)
                # Off: nothing there. On: the provider's own refusal of an unauthenticated call.
                assert response.status_code == expected, (enabled, path, response.text)
