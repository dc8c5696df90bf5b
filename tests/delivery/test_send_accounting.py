"""Send accounting through the real providers and their sandboxes (Twilio SMS, WhatsApp Cloud API), on both
databases: cost per billable unit and budgets, opt-outs at send time, provider retry-after, default throughput,
the public URL providers call back, and WhatsApp's messaging-limit tier shared by the campaigns of one number."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import httpx
import pytest
from sqlalchemy import distinct, func, select

from clarion.campaign import claims, sending
from clarion.config import Settings
from clarion.db import Database
from clarion.delivery import channel_service
from clarion.delivery.dispatch import Dispatcher
from clarion.kit.clock import clock, utcnow
from clarion.models import CampaignRecipient, RateBucket
from clarion.sandbox import twilio as twilio_sandbox
from clarion.sandbox import whatsapp as whatsapp_sandbox
from clarion.sandbox.control import SandboxControl
from tests.conftest import make_tenant
from tests.delivery.helpers import CAMPAIGNS, campaign_row, recipients, send_due
from tests.fakes.serving import serve_asgi

# 200 GSM-7 characters: two concatenated SMS parts (153 each), one part is 160.
TWO_PART_SMS = "Spring sale {{ contact.first_name }}: " + "x" * 150 + " Reply STOP to opt out"
ONE_PART_SMS = "Spring sale {{ contact.first_name }}! Reply STOP to opt out"
OPTED_OUT_AT_TWILIO = "+15005550004"  # Twilio's test number that answers 21610 (the person replied STOP)


def phones(count: int, start: int = 0) -> list[str]:
    return [f"+1415555{n:04d}" for n in range(start, start + count)]


@dataclass
class Sandbox:
    url: str
    control: SandboxControl


@pytest.fixture
async def twilio() -> AsyncIterator[Sandbox]:
    control = SandboxControl()
    app = twilio_sandbox.create_app(control)
    async with serve_asgi(app) as url:
        yield Sandbox(url, control)
    await app.state.sandbox.close()  # status callbacks still on their way


@pytest.fixture
async def whatsapp() -> AsyncIterator[Sandbox]:
    control = SandboxControl()
    async with serve_asgi(whatsapp_sandbox.create_app(control)) as url:
        yield Sandbox(url, control)


async def add_contacts(api: httpx.AsyncClient, numbers: list[str]) -> None:
    csv = "phone,first_name\n" + "".join(f"{n},Ann{i}\n" for i, n in enumerate(numbers))
    imported = await api.post("/api/v1/contacts/import", files={"file": ("c.csv", csv.encode(), "text/csv")})
    assert imported.status_code == 200, imported.text


async def twilio_channel(api: httpx.AsyncClient, sandbox: Sandbox, **fields: Any) -> str:
    config = {"account_sid": twilio_sandbox.DEFAULT_ACCOUNT_SID, "auth_token": twilio_sandbox.DEFAULT_AUTH_TOKEN,
              "from_number": twilio_sandbox.DEFAULT_NUMBER, "api_base_url": sandbox.url}
    # Twilio's default is a long code's 1 message/second; the sandbox takes more.
    body = {"channel": "sms", "provider": "twilio", "name": f"twilio-{uuid.uuid4().hex[:6]}", "config": config,
            "rate_limit_per_second": 5000, **fields}
    response = await api.post("/api/v1/channels", json=body)
    assert response.status_code == 201, response.text
    return str(response.json()["id"])


async def whatsapp_channel(api: httpx.AsyncClient, sandbox: Sandbox, **fields: Any) -> str:
    config = {**whatsapp_sandbox.SandboxAccount().channel_config(sandbox.url), "messaging_limit_tier": 250}
    body = {"channel": "whatsapp", "provider": "whatsapp", "name": f"wa-{uuid.uuid4().hex[:6]}", "config": config,
            **fields}
    response = await api.post("/api/v1/channels", json=body)
    assert response.status_code == 201, response.text
    return str(response.json()["id"])


async def sms_campaign(api: httpx.AsyncClient, channel_id: str, numbers: list[str], *, text: str = ONE_PART_SMS,
                       start: bool = True, **fields: Any) -> str:
    template = await api.post("/api/v1/templates", json={"name": f"sms-{uuid.uuid4().hex[:6]}", "channel": "sms",
                                                         "body_text": text})
    assert template.status_code == 201, template.text
    return await _campaign(api, {"channel": "sms", "template_id": template.json()["id"],
                                 "channel_config_id": channel_id, **fields}, numbers, start=start)


async def whatsapp_campaign(api: httpx.AsyncClient, channel_id: str, numbers: list[str], **fields: Any) -> str:
    return await _campaign(api, {"channel": "whatsapp", "template_name": "spring_sale", "language_code": "en_US",
                                 "channel_config_id": channel_id, **fields}, numbers, start=True)


async def _campaign(api: httpx.AsyncClient, body: dict[str, Any], numbers: list[str], *, start: bool) -> str:
    created = await api.post(CAMPAIGNS, json={"name": f"c-{uuid.uuid4().hex[:6]}", **body})
    assert created.status_code == 201, created.text
    campaign_id = str(created.json()["id"])
    added = await api.post(f"{CAMPAIGNS}/{campaign_id}/recipients", json={"phone_numbers": numbers})
    assert added.status_code == 200 and added.json()["recipients_added"] == len(numbers), added.text
    if start:
        started = await api.post(f"{CAMPAIGNS}/{campaign_id}/start")
        assert started.status_code == 200, started.text
    return campaign_id


async def process_daily(api: httpx.AsyncClient) -> int:
    response = await api.post("/api/v1/process-daily")
    assert response.status_code == 200, response.text
    return int(response.json()["messages_sent"])


def sent_messages(sandbox: Sandbox) -> list[Any]:
    return [r for r in sandbox.control.requests if r.method == "POST"]


# --- cost, budget ---------------------------------------------------------------------------------------------

async def test_spent_is_cost_per_message_times_sms_segments_and_callbacks_name_the_public_url(
        api: httpx.AsyncClient, db: Database, twilio: Sandbox) -> None:
    channel_id = await twilio_channel(api, twilio, cost_per_message=5)
    numbers = phones(3)
    await add_contacts(api, numbers)
    campaign_id = await sms_campaign(api, channel_id, numbers, text=TWO_PART_SMS)

    assert await process_daily(api) == 3
    campaign = await campaign_row(db, campaign_id)
    assert campaign.sent == 3 and campaign.spent == 3 * 2 * 5  # two segments each, 5 per segment
    forms = [r.data for r in sent_messages(twilio)]
    # No status_callback_url in the config: Twilio is told the install's public URL (CLARION_BASE_URL).
    assert {f["StatusCallback"].partition("?")[0] for f in forms} == {"http://clarion.test/webhooks/twilio/status"}
    rows = await recipients(db, campaign_id)
    assert {r.status for r in rows} == {"sent"}
    assert {r.channel_config_id for r in rows} == {uuid.UUID(channel_id)}


async def test_a_test_send_also_names_the_public_url(api: httpx.AsyncClient, twilio: Sandbox) -> None:
    channel_id = await twilio_channel(api, twilio)
    template = await api.post("/api/v1/templates", json={"name": "t", "channel": "sms", "body_text": ONE_PART_SMS})
    created = await api.post(CAMPAIGNS, json={"name": "test send", "channel": "sms",
                                              "template_id": template.json()["id"], "channel_config_id": channel_id})
    campaign_id = created.json()["id"]
    response = await api.post(f"{CAMPAIGNS}/{campaign_id}/test", json={"to": ["+14155550100"]})
    assert response.status_code == 200 and response.json()["sent"] == 1, response.text
    [form] = [r.data for r in sent_messages(twilio)]
    assert form["StatusCallback"].partition("?")[0] == "http://clarion.test/webhooks/twilio/status"


async def test_a_budget_of_single_part_messages_is_spent_exactly_then_the_campaign_pauses(
        api: httpx.AsyncClient, db: Database, twilio: Sandbox) -> None:
    channel_id = await twilio_channel(api, twilio, cost_per_message=5)
    numbers = phones(10)
    await add_contacts(api, numbers)
    campaign_id = await sms_campaign(api, channel_id, numbers, budget=20)

    assert await process_daily(api) == 4
    assert await process_daily(api) == 0
    campaign = await campaign_row(db, campaign_id)
    assert campaign.spent == 20 and campaign.sent == 4 and campaign.pending == 6
    assert campaign.status == "paused" and "budget reached" in (campaign.status_reason or "")
    assert len(sent_messages(twilio)) == 4


async def test_multi_part_messages_never_overspend_and_a_raised_budget_finishes_the_campaign(
        api: httpx.AsyncClient, db: Database, twilio: Sandbox) -> None:
    channel_id = await twilio_channel(api, twilio, cost_per_message=5)
    numbers = phones(10)
    await add_contacts(api, numbers)
    # The claim can only guess 5 a message (nothing sent yet) and takes 7; each costs 10, so 3 go out.
    campaign_id = await sms_campaign(api, channel_id, numbers, text=TWO_PART_SMS, budget=35)

    assert await process_daily(api) == 3
    campaign = await campaign_row(db, campaign_id)
    assert campaign.spent == 30 and campaign.status == "paused"
    assert "budget reached" in (campaign.status_reason or "") and "would cost 10" in (campaign.status_reason or "")
    rows = await recipients(db, campaign_id)
    # Held back unsent: pending again, no attempt counted.
    assert sorted(r.status for r in rows) == ["pending"] * 7 + ["sent"] * 3
    assert all(r.retry_count == 0 and r.lease_owner is None for r in rows if r.status == "pending")
    assert len(sent_messages(twilio)) == 3

    limits = (await api.get(f"{CAMPAIGNS}/{campaign_id}/send-limits")).json()
    assert limits["budget"] == 35 and limits["spent"] == 30 and limits["budget_messages_left"] == 1

    patched = await api.patch(f"{CAMPAIGNS}/{campaign_id}", json={"budget": 100})
    assert patched.status_code == 200, patched.text
    assert (await api.post(f"{CAMPAIGNS}/{campaign_id}/resume")).status_code == 200
    assert await process_daily(api) == 7
    campaign = await campaign_row(db, campaign_id)
    assert campaign.spent == 100 and campaign.sent == 10 and campaign.status == "completed"


# --- opt-outs, retry-after -------------------------------------------------------------------------------------

async def test_opted_out_recipients_fail_and_their_contacts_are_unsubscribed_from_the_channel(
        api: httpx.AsyncClient, db: Database, twilio: Sandbox) -> None:
    channel_id = await twilio_channel(api, twilio)
    numbers = [*phones(4), OPTED_OUT_AT_TWILIO]
    await add_contacts(api, numbers)
    campaign_id = await sms_campaign(api, channel_id, numbers, start=False)
    twilio.control.fail_next("opt_out", times=2)  # two more people replied STOP, whoever is sent first
    assert (await api.post(f"{CAMPAIGNS}/{campaign_id}/start")).status_code == 200

    assert await process_daily(api) == 2
    rows = await recipients(db, campaign_id)
    failed = [r for r in rows if r.status == "failed"]
    assert len(failed) == 3 and all("21610" in (r.failure_reason or "") for r in failed)
    assert OPTED_OUT_AT_TWILIO in {r.phone for r in failed}
    campaign = await campaign_row(db, campaign_id)
    assert campaign.failed == 3 and campaign.sent == 2 and campaign.status == "completed"

    opted_out = {r.contact_id for r in failed}
    for row in rows:
        contact = (await api.get(f"/api/v1/contacts/{row.contact_id}")).json()
        sms = contact["subscriptions"]["sms"]
        if row.contact_id in opted_out:
            assert sms["status"] == "unsubscribed" and sms["source"] == "twilio:opt_out"
            assert contact["subscriptions"]["whatsapp"]["status"] == "subscribed"  # another channel: untouched
        else:
            assert sms["status"] == "subscribed"
    events = (await api.get(f"{CAMPAIGNS}/{campaign_id}/events", params={"type": "failed"})).json()["items"]
    assert len(events) == 3 and all(e["metadata"]["opted_out"] is True for e in events)

    # A later SMS campaign to the same people leaves the opted-out ones out.
    again = await api.post(CAMPAIGNS, json={"name": "again", "channel": "sms", "channel_config_id": channel_id})
    added = await api.post(f"{CAMPAIGNS}/{again.json()['id']}/recipients", json={"phone_numbers": numbers})
    assert added.json()["recipients_added"] == 2 and added.json()["skipped_unsubscribed"] == 3


async def test_a_throttled_send_is_retried_after_the_backoff(api: httpx.AsyncClient, db: Database,
                                                              twilio: Sandbox) -> None:
    channel_id = await twilio_channel(api, twilio)
    numbers = phones(1)
    await add_contacts(api, numbers)
    campaign_id = await sms_campaign(api, channel_id, numbers, start=False)
    twilio.control.fail_next("transient")  # 429 with Retry-After: 1
    assert (await api.post(f"{CAMPAIGNS}/{campaign_id}/start")).status_code == 200
    before = utcnow()
    assert await process_daily(api) == 0
    [row] = await recipients(db, campaign_id)
    assert row.status == "pending" and row.retry_count == 1 and "20429" in (row.failure_reason or "")
    # One second asked for, the pipeline's backoff (30–60 s for a first retry) is longer: the longer wins.
    assert row.send_after is not None and row.send_after >= before + timedelta(seconds=30)


@pytest.mark.parametrize(("retry_after", "at_least"), [(7200.0, 7200.0), (1.0, 30.0), (None, 30.0)])
async def test_a_retry_waits_for_the_longer_of_retry_after_and_the_backoff(
        api: httpx.AsyncClient, db: Database, retry_after: float | None, at_least: float) -> None:
    numbers = phones(1)
    await add_contacts(api, numbers)
    campaign = await api.post(CAMPAIGNS, json={"name": "r", "channel": "sms"})
    campaign_id = campaign.json()["id"]
    await api.post(f"{CAMPAIGNS}/{campaign_id}/recipients", json={"phone_numbers": numbers})
    assert (await api.post(f"{CAMPAIGNS}/{campaign_id}/start")).status_code == 200
    now = utcnow()
    async with db.transaction() as session:
        [claimed] = await claims.claim_due(session, now=now, limit=10, lease_owner="w1", lease_seconds=60,
                                            campaign_id=uuid.UUID(campaign_id))
    async with db.transaction() as session:
        await sending.record_outcomes(session, [sending.SendOutcome(claimed.id, ok=False, transient=True,
                                                                    error="429", retry_after=retry_after)],
                                      now=now, lease_owner="w1")
    [row] = await recipients(db, campaign_id)
    assert row.status == "pending" and row.retry_count == 1
    assert row.send_after is not None and row.send_after >= now + timedelta(seconds=at_least)
    assert row.send_after <= now + timedelta(seconds=max(at_least, 60.0))


# --- throughput -------------------------------------------------------------------------------------------------

async def test_an_account_without_a_rate_uses_its_providers_default_through_the_shared_throttle(
        api: httpx.AsyncClient, db: Database, settings: Settings, whatsapp: Sandbox) -> None:
    channel_id = await whatsapp_channel(api, whatsapp)
    limited_id = await whatsapp_channel(api, whatsapp, rate_limit_per_second=12.5)
    twilio_id = await twilio_channel(api, Sandbox("http://127.0.0.1:9", SandboxControl()),
                                     rate_limit_per_second=None)
    tenant_id = api.tenant.id  # type: ignore[attr-defined]
    rates = {}
    async with db.transaction() as session:
        for channel, cid in (("whatsapp", channel_id), ("whatsapp", limited_id), ("sms", twilio_id)):
            resolved = await channel_service.resolve_channel(session, tenant_id, channel, uuid.UUID(cid),
                                                             secret=settings.resolved_secret_key(),
                                                             data_dir=settings.data_dir)
            rates[cid] = resolved.rate_limit_per_second
    # WhatsApp Cloud API's 80/s and a US long code's 1/s unless the account says otherwise.
    assert rates == {channel_id: 80.0, limited_id: 12.5, twilio_id: 1.0}

    numbers = phones(3)
    await add_contacts(api, numbers)
    await whatsapp_campaign(api, channel_id, numbers)
    assert await process_daily(api) == 3
    async with db.transaction() as session:
        bucket = await session.get(RateBucket, f"channel:{channel_id}")
    assert bucket is not None  # the sends went through the account's shared bucket


async def test_the_limits_of_a_campaign_whose_channel_has_no_account_are_a_409(api: httpx.AsyncClient) -> None:
    created = await api.post(CAMPAIGNS, json={"name": "nowhere", "channel": "sms"})
    response = await api.get(f"{CAMPAIGNS}/{created.json()['id']}/send-limits")
    assert response.status_code == 409 and response.json()["code"] == "channel_not_configured"


async def test_an_email_campaign_without_limits_reports_none_and_only_to_its_tenant(
        api: httpx.AsyncClient, db: Database) -> None:
    created = await api.post(CAMPAIGNS, json={"name": "mail", "channel": "email"})
    url = f"{CAMPAIGNS}/{created.json()['id']}/send-limits"
    limits = (await api.get(url)).json()
    assert limits["provider"] == "outbox" and limits["channel_config_id"] is None
    assert limits["effective_daily_limit"] is None and limits["can_send_now"] is None
    assert limits["messaging_limit_tier"] is None and limits["budget_messages_left"] is None
    other = await make_tenant(db, "Other")
    assert (await api.get(url, headers=other.headers)).status_code == 404


# --- messaging-limit tiers --------------------------------------------------------------------------------------

async def unique_recipients_in_window(db: Database, channel_id: str) -> int:
    since = utcnow() - timedelta(hours=24)
    R = CampaignRecipient
    async with db.transaction() as session:
        stmt = select(func.count(distinct(R.contact_id))).where(R.channel_config_id == uuid.UUID(channel_id),
                                                                R.sent_at > since)
        return int((await session.execute(stmt)).scalar_one())


async def test_two_campaigns_on_one_number_share_its_tier_and_sending_resumes_a_day_later(
        api: httpx.AsyncClient, db: Database, settings: Settings, whatsapp: Sandbox) -> None:
    clock.freeze(utcnow().replace(hour=9, minute=0, second=0, microsecond=0))
    channel_id = await whatsapp_channel(api, whatsapp, rate_limit_per_second=5000)
    first, second = phones(200), phones(200, start=150)  # 50 people in both campaigns
    await add_contacts(api, sorted(set(first + second)))
    a = await whatsapp_campaign(api, channel_id, first, daily_send_limit=200)
    b = await whatsapp_campaign(api, channel_id, second, daily_send_limit=200)

    await send_due(db, settings, a)
    assert (await campaign_row(db, a)).sent == 200
    limits = (await api.get(f"{CAMPAIGNS}/{b}/send-limits")).json()
    assert limits["messaging_limit_tier"] == 250 and limits["tier_recipients_used"] == 200
    assert limits["tier_recipients_left"] == 50 and limits["effective_daily_limit"] == 50
    assert limits["daily_send_limit"] == 200 and limits["can_send_now"] == 50

    await send_due(db, settings, b)
    # The 50 people the number already reached today cost nothing; 50 new ones fill the tier.
    campaign_b = await campaign_row(db, b)
    assert campaign_b.sent == 100 and campaign_b.pending == 100
    assert await unique_recipients_in_window(db, channel_id) == 250
    assert len(sent_messages(whatsapp)) == 300
    limits = (await api.get(f"{CAMPAIGNS}/{b}/send-limits")).json()
    assert limits["tier_recipients_left"] == 0 and limits["effective_daily_limit"] == 0

    clock.advance(timedelta(hours=23))
    await send_due(db, settings, b)
    assert (await campaign_row(db, b)).sent == 100  # the window has not rolled past anyone yet

    clock.advance(timedelta(hours=1, minutes=1))
    await send_due(db, settings, b)
    campaign_b = await campaign_row(db, b)
    assert campaign_b.sent == 200 and campaign_b.pending == 0
    assert await unique_recipients_in_window(db, channel_id) == 100


async def test_concurrent_workers_never_exceed_the_tier(api: httpx.AsyncClient, db: Database, settings: Settings,
                                                        whatsapp: Sandbox) -> None:
    channel_id = await whatsapp_channel(api, whatsapp, rate_limit_per_second=5000)
    first, second = phones(200), phones(200, start=200)
    await add_contacts(api, first + second)
    a = await whatsapp_campaign(api, channel_id, first)
    b = await whatsapp_campaign(api, channel_id, second)

    workers = [Dispatcher(db, settings) for _ in range(2)]
    for worker in workers:
        worker.options.batch_size = 200
    try:
        await asyncio.gather(workers[0].drain([uuid.UUID(a), uuid.UUID(b)]),
                             workers[1].drain([uuid.UUID(b), uuid.UUID(a)]))
    finally:
        for worker in workers:
            await worker.close()
    total = (await campaign_row(db, a)).sent + (await campaign_row(db, b)).sent
    assert total == 250 and len(sent_messages(whatsapp)) == 250
    assert await unique_recipients_in_window(db, channel_id) == 250


async def test_a_daily_cron_at_the_same_instant_gets_a_full_tier_every_day(
        api: httpx.AsyncClient, db: Database, whatsapp: Sandbox) -> None:
    # Meta's rolling 24 hours: a person reached at T takes a slot of the tier until T + 24 h, not through it.
    nine = utcnow().replace(hour=9, minute=0, second=0, microsecond=0)
    clock.freeze(nine)
    channel_id = await whatsapp_channel(api, whatsapp, rate_limit_per_second=5000)
    numbers = phones(600)
    await add_contacts(api, numbers)
    campaign_id = await whatsapp_campaign(api, channel_id, numbers, daily_send_limit=250)
    limits_url = f"{CAMPAIGNS}/{campaign_id}/send-limits"

    sent_per_day = [await process_daily(api)]
    clock.freeze(nine + timedelta(days=1) - timedelta(microseconds=1))
    limits = (await api.get(limits_url)).json()
    assert limits["tier_recipients_used"] == 250 and limits["effective_daily_limit"] == 0
    assert await process_daily(api) == 0  # a microsecond early, yesterday's 250 still hold the tier

    for day in (1, 2):
        clock.freeze(nine + timedelta(days=day))
        limits = (await api.get(limits_url)).json()
        assert limits["tier_recipients_used"] == 0, limits
        assert limits["tier_recipients_left"] == 250 and limits["effective_daily_limit"] == 250
        sent_per_day.append(await process_daily(api))
    assert sent_per_day == [250, 250, 100]
    campaign = await campaign_row(db, campaign_id)
    assert campaign.sent == 600 and campaign.status == "completed"
    assert len(sent_messages(whatsapp)) == 600
