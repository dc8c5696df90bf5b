"""Statuses a provider reports before the send is recorded, through the real app on both databases: signed webhook
calls for recipients the real claim holds (`sending`), or message ids no recipient carries yet, wait as a job on the
worker's queue; the real worker applies them once the send is recorded (campaign.sending.record_outcomes), and gives
up on an id that never becomes known after the bounded wait."""

from __future__ import annotations

import logging
import secrets
import uuid
from datetime import timedelta

import httpx
import pytest
from sqlalchemy import select

from clarion.campaign import claims, sending
from clarion.config import Settings
from clarion.db import Database
from clarion.kit.clock import clock, utcnow
from clarion.models import Job, WebhookCall
from clarion.sandbox import whatsapp as wa_sandbox
from clarion.tracking import webhooks_deferred
from clarion.worker import Registry, Worker, registry
from tests.tracking.test_whatsapp_webhooks import whatsapp_account, whatsapp_campaign
from tests.tracking.twilio_helpers import (
    STATUS_PATH,
    calls_of,
    campaign_of,
    post_signed,
    recipients_of,
    sms_campaign,
    sms_contacts,
    twilio_account,
)

LEASE_OWNER = "test-dispatcher"


async def _claim(db: Database, campaign_id: str) -> list[claims.ClaimedRecipient]:
    """What the dispatcher does before it calls the provider: the recipients are `sending` under our lease."""
    async with db.transaction() as session:
        claimed = await claims.claim_due(session, now=utcnow(), limit=100, lease_owner=LEASE_OWNER,
                                          lease_seconds=300, campaign_id=uuid.UUID(campaign_id))
    assert claimed and all(r.status == "sending" for r in await recipients_of(db, campaign_id))
    return claimed


async def _record_sent(db: Database, sent: dict[int, str], provider: str) -> None:
    """What the dispatcher does after the provider answered: recipient id → the message id it gave."""
    async with db.transaction() as session:
        await sending.record_outcomes(session, [
            sending.SendOutcome(rid, ok=True, provider_message_id=pmid, provider=provider)
            for rid, pmid in sent.items()], now=utcnow(), lease_owner=LEASE_OWNER)


async def _run_jobs(db: Database, settings: Settings) -> int:
    """One pass of a real worker that knows the deferred-status job as the app registered it, past its run_at."""
    clock.advance(timedelta(seconds=webhooks_deferred.FIRST_DELAY_SECONDS + 1))
    worker = Worker(db, registry=Registry(jobs={webhooks_deferred.JOB: registry.jobs[webhooks_deferred.JOB]}),
                    settings=settings, concurrency=100, poll_interval=0.02)
    return await worker.run_once()


async def _jobs(db: Database, tenant_id: uuid.UUID) -> list[Job]:
    async with db.transaction() as session:
        rows = await session.execute(select(Job).where(Job.tenant_id == tenant_id, Job.name == webhooks_deferred.JOB)
                                     .order_by(Job.id))
        return list(rows.scalars())


def _outcome(call: WebhookCall) -> dict:  # type: ignore[type-arg]
    assert call.outcome is not None
    return call.outcome


def test_the_job_is_registered_where_the_worker_finds_jobs() -> None:
    import clarion.api  # noqa: F401 - what `clarion worker` imports before it starts

    assert registry.jobs[webhooks_deferred.JOB].fn is webhooks_deferred.apply_deferred_statuses


async def test_a_delivered_status_for_a_claimed_recipient_applies_once_the_send_is_recorded(
        api: httpx.AsyncClient, client: httpx.AsyncClient, db: Database, settings: Settings) -> None:
    async with twilio_account(api) as account:
        campaign_id = await sms_campaign(api, account, await sms_contacts(api, 2))
        first, second = await _claim(db, campaign_id)
        sid = "SM" + secrets.token_hex(16)
        # Twilio's callback for the first message, before our send's answer is recorded: only our ref names it.
        path = f"{STATUS_PATH}?clarion_ref={first.id}"
        call = account.status(sid, "delivered", path=path)
        response = await post_signed(client, path, call)
        replayed = await post_signed(client, path, call)
        assert (response.status_code, replayed.status_code) == (200, 200)
        assert [r.status for r in await recipients_of(db, campaign_id)] == ["sending", "sending"]
        [logged] = await calls_of(db, account.channel_id)  # the replay left no second row, and no second job
        assert (_outcome(logged)["deferred"], _outcome(logged)["moved"], _outcome(logged)["unknown"]) == (1, 0, 0)
        [waiting] = await _jobs(db, api.tenant.id)  # type: ignore[attr-defined]
        assert waiting.status == "queued" and waiting.run_at > utcnow()

        await _record_sent(db, {first.id: sid, second.id: "SM" + secrets.token_hex(16)}, "twilio")
        assert await _run_jobs(db, settings) >= 1
    after = await recipients_of(db, campaign_id)
    assert [r.status for r in after] == ["delivered", "sent"] and after[0].delivered_at is not None
    campaign = await campaign_of(db, campaign_id)
    assert (campaign.sent, campaign.delivered) == (2, 1)
    [done] = await _jobs(db, api.tenant.id)  # type: ignore[attr-defined]
    assert (done.status, done.attempts) == ("succeeded", 1)
    [logged] = await calls_of(db, account.channel_id)
    later = _outcome(logged)["later"]
    assert (later["moved"], later["matched"], later["deferred"], later["unknown"], later["rounds"]) == (1, 1, 0, 0, 1)


async def test_a_status_for_a_message_id_not_yet_recorded_applies_once_it_is_and_never_counts_twice(
        api: httpx.AsyncClient, client: httpx.AsyncClient, db: Database, settings: Settings) -> None:
    async with whatsapp_account(api) as wa:
        campaign_id, numbers = await whatsapp_campaign(api, wa, 1)
        [claimed] = await _claim(db, campaign_id)
        wamid = wa_sandbox.new_wamid(numbers[0].removeprefix("+"))
        # No biz_opaque_callback_data: the message id is all the status names, and no recipient carries it yet.
        delivered = wa_sandbox.status_payload(wa.account, wamid, "delivered", recipient_id=numbers[0][1:])
        assert (await wa.post(client, delivered)).status_code == 200
        # The provider sends the same status again in a call of its own (not a byte-identical replay).
        again = wa_sandbox.status_payload(wa.account, wamid, "delivered", recipient_id=numbers[0][1:],
                                          timestamp=str(int(utcnow().timestamp()) + 1))
        assert (await wa.post(client, again)).status_code == 200
        calls = await calls_of(db, wa.channel_id)
        assert [(_outcome(c)["deferred"], _outcome(c)["unknown"]) for c in calls] == [(1, 0), (1, 0)]
        assert len(await _jobs(db, api.tenant.id)) == 2  # type: ignore[attr-defined]

        await _record_sent(db, {claimed.id: wamid}, "whatsapp")
        # The read receipt comes after the send is recorded, before the deferred `delivered` is applied.
        read = await wa.post(client, wa_sandbox.status_payload(wa.account, wamid, "read",
                                                               recipient_id=numbers[0][1:]))
        assert read.status_code == 200
        assert (await recipients_of(db, campaign_id))[0].status == "opened"
        await _run_jobs(db, settings)
    [row] = await recipients_of(db, campaign_id)
    assert (row.status, row.delivered_at is not None, row.opened_at is not None) == ("opened", True, True)
    campaign = await campaign_of(db, campaign_id)
    assert (campaign.sent, campaign.delivered, campaign.opened) == (1, 1, 1)
    assert [j.status for j in await _jobs(db, api.tenant.id)] == ["succeeded", "succeeded"]  # type: ignore[attr-defined]
    # Each deferred delivered matched its recipient when its send was recorded; none moved it (read already had).
    later = [_outcome(c)["later"] for c in (await calls_of(db, wa.channel_id))[:2]]
    assert [(x["matched"], x["moved"], x["deferred"]) for x in later] == [(1, 0, 0), (1, 0, 0)]


async def test_an_opt_out_for_a_claimed_recipient_ends_the_subscription_at_once_and_fails_it_later(
        api: httpx.AsyncClient, client: httpx.AsyncClient, db: Database, settings: Settings) -> None:
    async with twilio_account(api) as account:
        [contact] = await sms_contacts(api, 1)
        campaign_id = await sms_campaign(api, account, [contact])
        [claimed] = await _claim(db, campaign_id)
        sid = "SM" + secrets.token_hex(16)
        path = f"{STATUS_PATH}?clarion_ref={claimed.id}"
        response = await post_signed(client, path, account.status(sid, "failed", error_code=21610, path=path))
        assert response.status_code == 200
        consent = (await api.get(f"/api/v1/contacts/{contact['id']}")).json()["subscriptions"]["sms"]
        assert (consent["status"], consent["source"]) == ("unsubscribed", "twilio:21610")
        await _record_sent(db, {claimed.id: sid}, "twilio")
        await _run_jobs(db, settings)
    [row] = await recipients_of(db, campaign_id)
    assert row.status == "failed" and "STOP" in (row.failure_reason or "")
    campaign = await campaign_of(db, campaign_id)
    assert (campaign.sent, campaign.failed) == (1, 1)


async def test_a_message_id_that_never_becomes_known_ends_as_unknown_after_the_bounded_wait(
        api: httpx.AsyncClient, client: httpx.AsyncClient, db: Database, settings: Settings,
        caplog: pytest.LogCaptureFixture) -> None:
    tenant_id = api.tenant.id  # type: ignore[attr-defined]
    sid = "SM" + secrets.token_hex(16)
    async with twilio_account(api) as account:
        response = await post_signed(client, STATUS_PATH, account.status(sid, "delivered"))
        assert response.status_code == 200
        [logged] = await calls_of(db, account.channel_id)
        assert (_outcome(logged)["deferred"], _outcome(logged)["unknown"]) == (1, 0)
        await _run_jobs(db, settings)  # not known yet: deferred again, later
        first, second = await _jobs(db, tenant_id)
        assert (first.status, second.status, second.args["round"]) == ("succeeded", "queued", 2)
        assert second.run_at <= first.created_at + webhooks_deferred.MAX_WAIT
        clock.advance(webhooks_deferred.MAX_WAIT)
        with caplog.at_level(logging.INFO, logger="clarion.tracking.webhooks"):
            while any(j.status == "queued" for j in await _jobs(db, tenant_id)):
                assert await _run_jobs(db, settings) >= 1
    jobs = await _jobs(db, tenant_id)
    assert {j.status for j in jobs} == {"succeeded"} and all(j.last_error is None for j in jobs)
    assert any("no recipient" in r.getMessage() and sid in r.getMessage() for r in caplog.records)
    [logged] = await calls_of(db, account.channel_id)
    later = _outcome(logged)["later"]
    assert (later["unknown"], later["unknown_message_ids"], later["deferred"]) == (1, [sid], 0)
