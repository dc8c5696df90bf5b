"""One batch is shared by the channel accounts that have due recipients, on both databases: a high-priority
campaign whose account cannot send now (its provider failing, its messaging-limit tier used up) never keeps a
lower-priority campaign of another account or channel waiting, while priority still orders the campaigns that
compete for one account.

These tests claim across all campaigns, as a worker does, so each runs on a database of its own."""

from __future__ import annotations

import asyncio
import uuid
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from clarion.app import create_app
from clarion.campaign import claims
from clarion.campaign import send_quotas as quotas
from clarion.config import Settings
from clarion.db import Database
from clarion.delivery import send_accounting
from clarion.delivery.dispatch import Dispatcher, DispatchSettings
from clarion.kit.clock import utcnow
from clarion.migrate import upgrade
from tests.conftest import make_tenant, own_pg_database
from tests.delivery import test_send_accounting as accounting
from tests.delivery.helpers import campaign_row, email_template, people, recipients, running_campaign
from tests.delivery.test_send_accounting import (
    Sandbox,
    add_contacts,
    phones,
    sent_messages,
    whatsapp_campaign,
    whatsapp_channel,
)

whatsapp = accounting.whatsapp  # the Cloud API sandbox fixture, for these tests too


@dataclass
class Install:
    db: Database
    settings: Settings
    api: httpx.AsyncClient


@pytest.fixture
async def install(backend: str, tmp_path: Path) -> AsyncIterator[Install]:
    """A migrated database of its own, with one tenant and an API client for it."""
    with ExitStack() as own:
        url = (own.enter_context(own_pg_database("clarion_fair")) if backend == "postgres"
               else f"sqlite+aiosqlite:///{tmp_path / 'clarion.db'}")
        await asyncio.to_thread(upgrade, url)
        db = Database(url)
        settings = Settings(data_dir=tmp_path, database_url=url, secret_key="fair-test-secret-" + "f" * 32,
                            base_url="http://clarion.test")
        try:
            tenant = await make_tenant(db, "Fair")
            async with httpx.AsyncClient(transport=httpx.ASGITransport(app=create_app(settings, database=db)),
                                         base_url="http://clarion.test", headers=tenant.headers) as api:
                yield Install(db, settings, api)
        finally:
            await db.dispose()


async def dispatch_one_batch(install: Install, batch_size: int) -> None:
    """What a worker does in one turn of its loop: claim a batch across every campaign, send it."""
    dispatcher = Dispatcher(install.db, install.settings, options=DispatchSettings(batch_size=batch_size))
    try:
        await dispatcher.dispatch_once()
    finally:
        await dispatcher.close()


async def email_campaign(api: httpx.AsyncClient, count: int, *, priority: int) -> str:
    return await running_campaign(api, people(count), template_id=await email_template(api), priority=priority)


async def whatsapp_and_email(install: Install, whatsapp: Sandbox, *, numbers: int,
                             rate_limit_per_second: int) -> tuple[str, str]:
    """(a priority-10 WhatsApp campaign to `numbers` new contacts, a priority-1 email campaign to 5 people)."""
    channel_id = await whatsapp_channel(install.api, whatsapp, rate_limit_per_second=rate_limit_per_second)
    phone_numbers = phones(numbers)
    await add_contacts(install.api, phone_numbers)
    urgent = await whatsapp_campaign(install.api, channel_id, phone_numbers, priority=10)
    return urgent, await email_campaign(install.api, 5, priority=1)


async def claim_all(install: Install, limit: int, *, lease_seconds: int = 60) -> list[claims.ClaimedRecipient]:
    """One claim across every campaign, through each campaign's channel account, as the dispatcher makes it."""
    account_of = send_accounting.account_resolver(secret=install.settings.resolved_secret_key(),
                                                  data_dir=install.settings.data_dir)
    async with install.db.transaction() as session:
        return await claims.claim_due(session, now=utcnow(), limit=limit, lease_owner="w",
                                      lease_seconds=lease_seconds, account_of=account_of)


async def test_a_failing_provider_on_a_high_priority_campaign_does_not_hold_back_an_email_campaign(
        install: Install, whatsapp: Sandbox) -> None:
    urgent, newsletter = await whatsapp_and_email(install, whatsapp, numbers=60, rate_limit_per_second=5000)
    whatsapp.control.fail_next("transient", times=1000)  # the Cloud API is throttling the number

    await dispatch_one_batch(install, batch_size=20)
    # The batch was not all WhatsApp: the email campaign went out in the same turn of the loop.
    assert {r.status for r in await recipients(install.db, newsletter)} == {"sent"}
    tried = [r for r in await recipients(install.db, urgent) if r.retry_count == 1]
    assert len(tried) == 15 and {r.status for r in tried} == {"pending"}  # put back for a retry
    assert len(sent_messages(whatsapp)) == 15


async def test_a_high_priority_campaign_on_an_exhausted_tier_does_not_hold_back_an_email_campaign(
        install: Install, whatsapp: Sandbox) -> None:
    api = install.api
    channel_id = await whatsapp_channel(api, whatsapp, rate_limit_per_second=5000)  # a tier of 250
    numbers = phones(300)
    await add_contacts(api, numbers)
    urgent = await whatsapp_campaign(api, channel_id, numbers, priority=10)
    await dispatch_one_batch(install, batch_size=500)
    assert (await campaign_row(install.db, urgent)).sent == 250  # the number reached its tier for today
    newsletter = await email_campaign(api, 30, priority=1)

    await dispatch_one_batch(install, batch_size=20)
    assert Counter(r.status for r in await recipients(install.db, newsletter)) == {"sent": 20, "pending": 10}
    await dispatch_one_batch(install, batch_size=20)
    assert {r.status for r in await recipients(install.db, newsletter)} == {"sent"}
    urgent_row = await campaign_row(install.db, urgent)
    assert urgent_row.sent == 250 and urgent_row.pending == 50  # waiting for the window to roll
    assert len(sent_messages(whatsapp)) == 250


async def test_priority_orders_the_campaigns_of_one_account_while_other_accounts_get_their_share(
        install: Install, whatsapp: Sandbox) -> None:
    api = install.api
    channel_id = await whatsapp_channel(api, whatsapp)
    numbers = phones(5)
    await add_contacts(api, numbers)
    chat = await whatsapp_campaign(api, channel_id, numbers, priority=5)
    # Two campaigns on the tenant's one email account (the built-in outbox) compete for it.
    high, low = await email_campaign(api, 30, priority=10), await email_campaign(api, 5, priority=1)

    async def claim(limit: int) -> Counter[str]:
        names = {uuid.UUID(high): "high", uuid.UUID(low): "low", uuid.UUID(chat): "chat"}
        return Counter(names[c.campaign_id] for c in await claim_all(install, limit))

    # Half the batch each; WhatsApp needs only 5 of its 10, which go to the email account's first campaign.
    assert await claim(20) == {"high": 15, "chat": 5}
    assert await claim(20) == {"high": 15, "low": 5}


async def test_a_slow_account_claims_only_what_its_throughput_sends_in_a_few_seconds(
        install: Install, whatsapp: Sandbox) -> None:
    slow, newsletter = await whatsapp_and_email(install, whatsapp, numbers=100, rate_limit_per_second=2)
    by_campaign = Counter(str(c.campaign_id) for c in await claim_all(install, 500, lease_seconds=300))
    # 2 a second: 20 (ten seconds of sending), not 495 that would outlive the lease and hold the worker.
    assert by_campaign == {slow: 2 * quotas.BATCH_SECONDS, newsletter: 5}
