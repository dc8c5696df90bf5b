"""Claims under a lease, outcomes (ok, transient, permanent), auto-pause, completion, links and revenue.

Every scenario ends by recounting the recipients and comparing with the campaign's counters.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from sqlalchemy import select

from clarion.campaign import claims, sending
from clarion.campaign.sending import SendOutcome
from clarion.db import Database
from clarion.errors import NotFound
from clarion.kit.clock import clock, utcnow
from clarion.models import Campaign, CampaignEvent, CampaignRecipient, DomainEvent
from tests.campaign.helpers import CAMPAIGNS, add_recipients, new_campaign, new_contact

MONDAY_10 = datetime(2025, 1, 6, 10, 0, tzinfo=UTC)


@pytest.fixture(autouse=True)
def frozen_clock() -> Iterator[None]:
    clock.freeze(MONDAY_10)
    try:
        yield
    finally:
        clock.reset()


# --- helpers shared by the sending, planning and events tests --------------------------------------------

async def contacts(api: httpx.AsyncClient, count: int, *, prefix: str = "r", **fields: Any) -> list[str]:
    """`count` email contacts; returns their emails in creation (= recipient id) order."""
    emails = [f"{prefix}{i}-{uuid.uuid4().hex[:6]}@example.com" for i in range(count)]
    for email in emails:
        await new_contact(api, email=email, **fields)
    return emails


async def running_campaign(api: httpx.AsyncClient, emails: list[str], **fields: Any) -> uuid.UUID:
    """An email campaign with these recipients, started (so planned from today)."""
    created = await new_campaign(api, **fields)
    added = await add_recipients(api, created["id"], {"emails": emails})
    assert added.status_code == 200 and added.json()["recipients_added"] == len(emails), added.text
    started = await api.post(f"{CAMPAIGNS}/{created['id']}/start")
    assert started.status_code == 200, started.text
    return uuid.UUID(created["id"])


async def claim(db: Database, *, campaign_id: uuid.UUID | None, limit: int = 100, owner: str = "worker-a",
                lease_seconds: int = 60, tenant_id: uuid.UUID | None = None) -> list[claims.ClaimedRecipient]:
    async with db.transaction() as session:
        return await claims.claim_due(session, now=utcnow(), limit=limit, lease_owner=owner,
                                       lease_seconds=lease_seconds, campaign_id=campaign_id, tenant_id=tenant_id)


async def record(db: Database, outcomes: list[SendOutcome], *, owner: str = "worker-a") -> None:
    async with db.transaction() as session:
        await sending.record_outcomes(session, outcomes, now=utcnow(), lease_owner=owner)


async def send_all(db: Database, campaign_id: uuid.UUID) -> list[claims.ClaimedRecipient]:
    claimed = await claim(db, campaign_id=campaign_id)
    await record(db, [SendOutcome(c.id, ok=True, provider_message_id=f"pm-{c.id}") for c in claimed])
    return claimed


async def recipients(db: Database, campaign_id: uuid.UUID) -> list[CampaignRecipient]:
    async with db.transaction() as session:
        stmt = select(CampaignRecipient).where(CampaignRecipient.campaign_id == campaign_id) \
            .order_by(CampaignRecipient.id)
        return list((await session.execute(stmt)).scalars().all())


async def load_campaign(db: Database, campaign_id: uuid.UUID) -> Campaign:
    async with db.transaction() as session:
        campaign = await session.get(Campaign, campaign_id)
        assert campaign is not None
        return campaign


async def assert_counters_match(db: Database, campaign_id: uuid.UUID) -> Campaign:
    """The campaign's counters equal what its recipients say (see campaign.sending for the definitions)."""
    rows = await recipients(db, campaign_id)
    campaign = await load_campaign(db, campaign_id)
    expected = {
        "total_target": len(rows),
        "pending": sum(r.status in ("pending", "sending") for r in rows),
        "sent": sum(r.sent_at is not None for r in rows),
        "delivered": sum(r.delivered_at is not None for r in rows),
        "opened": sum(r.opened_at is not None for r in rows),
        "clicked": sum(r.clicked_at is not None for r in rows),
        "converted": sum(r.converted_at is not None for r in rows),
        "failed": sum(r.status == "failed" for r in rows),
        "bounced": sum(r.status == "bounced" for r in rows),
        "skipped": sum(r.status == "skipped" for r in rows),
        "opened_total": sum(r.open_count for r in rows),
        "clicked_total": sum(r.click_count for r in rows),
    }
    assert {name: getattr(campaign, name) for name in expected} == expected
    return campaign


async def event_types(db: Database, campaign_id: uuid.UUID) -> list[str]:
    async with db.transaction() as session:
        stmt = select(CampaignEvent.type).where(CampaignEvent.campaign_id == campaign_id).order_by(CampaignEvent.id)
        return list((await session.execute(stmt)).scalars().all())


# --- claims -----------------------------------------------------------------------------------------------

async def test_claim_leases_due_recipients_and_skips_the_unsubscribed(api: httpx.AsyncClient, db: Database) -> None:
    emails = await contacts(api, 4)
    campaign_id = await running_campaign(api, emails)
    gone = await api.get("/api/v1/contacts", params={"q": emails[1]})
    contact_id = gone.json()["items"][0]["id"]
    response = await api.patch(f"/api/v1/contacts/{contact_id}", json={"subscriptions": {"email": "unsubscribed"}})
    assert response.status_code == 200, response.text

    claimed = await claim(db, lease_seconds=90, campaign_id=campaign_id)
    assert [c.email for c in claimed] == [emails[0], emails[2], emails[3]]
    assert {(c.channel, c.attempt, c.tenant_id) for c in claimed} == {("email", 1, api.tenant.id)}
    rows = await recipients(db, campaign_id)
    assert [r.status for r in rows] == ["sending", "skipped", "sending", "sending"]
    assert rows[1].failure_reason == "no longer subscribed to email"
    assert rows[0].lease_owner == "worker-a" and rows[0].lease_expires_at == MONDAY_10 + timedelta(seconds=90)
    assert await event_types(db, campaign_id) == ["skipped"]
    assert await claim(db, campaign_id=campaign_id) == []  # nothing left due
    campaign = await assert_counters_match(db, campaign_id)
    assert (campaign.pending, campaign.skipped) == (3, 1)


async def test_pause_stops_new_claims_at_once(api: httpx.AsyncClient, db: Database) -> None:
    campaign_id = await running_campaign(api, await contacts(api, 2))
    assert (await api.post(f"{CAMPAIGNS}/{campaign_id}/pause")).status_code == 200
    assert await claim(db, campaign_id=campaign_id) == []
    assert (await api.post(f"{CAMPAIGNS}/{campaign_id}/resume")).status_code == 200
    assert len(await claim(db, campaign_id=campaign_id)) == 2


async def test_two_concurrent_claims_never_take_the_same_recipient(api: httpx.AsyncClient, db: Database,
                                                                   backend: str) -> None:
    campaign_id = await running_campaign(api, await contacts(api, 12))
    async with db.sessions() as first, db.sessions() as second:
        mine = await claims.claim_due(first, now=utcnow(), limit=8, lease_owner="a", lease_seconds=60,
                                       campaign_id=campaign_id)
        if backend == "sqlite":
            # SQLite has one writer: the second claim can only start once the first has committed.
            await first.commit()
        # On PostgreSQL the first claim's transaction is still open (its rows locked) while the second claims.
        theirs = await claims.claim_due(second, now=utcnow(), limit=8, lease_owner="b", lease_seconds=60,
                                         campaign_id=campaign_id)
        await first.commit()
        await second.commit()
    assert len(mine) == 8 and len(theirs) == 4
    assert not {c.id for c in mine} & {c.id for c in theirs}
    owners = {r.id: r.lease_owner for r in await recipients(db, campaign_id)}
    assert all(owners[c.id] == "a" for c in mine) and all(owners[c.id] == "b" for c in theirs)


async def test_an_expired_lease_is_reclaimed_and_the_old_owner_cannot_record(api: httpx.AsyncClient,
                                                                            db: Database) -> None:
    campaign_id = await running_campaign(api, await contacts(api, 2))
    claimed = await claim(db, owner="crashed", lease_seconds=30, campaign_id=campaign_id)
    async with db.transaction() as session:
        assert await claims.release_expired_leases(session, now=utcnow()) == 0  # still leased
    clock.advance(timedelta(seconds=31))
    async with db.transaction() as session:
        assert await claims.release_expired_leases(session, now=utcnow()) == 2
    again = await claim(db, owner="rescuer", campaign_id=campaign_id)
    assert sorted(c.id for c in again) == sorted(c.id for c in claimed)
    await record(db, [SendOutcome(c.id, ok=True, provider_message_id="late") for c in claimed], owner="crashed")
    await record(db, [SendOutcome(c.id, ok=True, provider_message_id="pm") for c in again], owner="rescuer")
    await record(db, [SendOutcome(c.id, ok=True, provider_message_id="dup") for c in again], owner="rescuer")
    rows = await recipients(db, campaign_id)
    assert [(r.status, r.provider_message_id, r.lease_owner) for r in rows] == [("sent", "pm", None)] * 2
    assert await event_types(db, campaign_id) == ["sent", "sent"]
    campaign = await assert_counters_match(db, campaign_id)
    assert (campaign.sent, campaign.pending) == (2, 0)


# --- outcomes ---------------------------------------------------------------------------------------------

async def test_ok_transient_and_permanent_outcomes(api: httpx.AsyncClient, db: Database) -> None:
    campaign_id = await running_campaign(api, await contacts(api, 3), max_attempts=2)
    ok, flaky, bad = await claim(db, campaign_id=campaign_id)
    await record(db, [SendOutcome(ok.id, ok=True, provider_message_id="<m1@x>", cost=3),
                      SendOutcome(flaky.id, ok=False, transient=True, error="421 try later", cost=3),
                      SendOutcome(bad.id, ok=False, transient=False, error="550 no such user")])
    rows = {r.id: r for r in await recipients(db, campaign_id)}
    assert (rows[ok.id].status, rows[ok.id].sent_at, rows[ok.id].provider_message_id) == ("sent", MONDAY_10, "<m1@x>")
    retry = rows[flaky.id]
    assert (retry.status, retry.retry_count, retry.failure_reason) == ("pending", 1, "421 try later")
    assert MONDAY_10 + timedelta(seconds=30) <= retry.send_after <= MONDAY_10 + timedelta(seconds=60)
    assert (rows[bad.id].status, rows[bad.id].failed_at, rows[bad.id].failure_reason) == \
        ("failed", MONDAY_10, "550 no such user")
    campaign = await assert_counters_match(db, campaign_id)
    assert (campaign.sent, campaign.failed, campaign.pending, campaign.spent) == (1, 1, 1, 6)

    assert await claim(db, campaign_id=campaign_id) == []  # the retry waits out its backoff
    clock.advance(timedelta(minutes=2))
    [second_try] = await claim(db, campaign_id=campaign_id)
    assert (second_try.id, second_try.attempt) == (flaky.id, 2)
    await record(db, [SendOutcome(flaky.id, ok=False, transient=True, error="421 still busy")])
    final = {r.id: r for r in await recipients(db, campaign_id)}[flaky.id]
    assert (final.status, final.retry_count, final.failure_reason) == ("failed", 2, "421 still busy")
    assert await event_types(db, campaign_id) == ["sent", "failed", "failed"]
    campaign = await assert_counters_match(db, campaign_id)
    assert (campaign.failed, campaign.pending) == (2, 0)


async def test_consecutive_failures_pause_the_campaign_and_a_success_resets_the_run(
        api: httpx.AsyncClient, db: Database) -> None:
    emails = await contacts(api, 8)
    steady = await running_campaign(api, emails[:5], max_send_errors=3)
    claimed = await claim(db, campaign_id=steady)
    pattern = [False, False, True, False, False]
    await record(db, [SendOutcome(c.id, ok=ok, error=None if ok else "550 rejected")
                      for c, ok in zip(claimed, pattern, strict=True)])
    campaign = await load_campaign(db, steady)
    assert (campaign.status, campaign.consecutive_failures) == ("running", 2)

    failing = await running_campaign(api, emails[5:], max_send_errors=3)
    claimed = await claim(db, campaign_id=failing)
    await record(db, [SendOutcome(c.id, ok=False, error="535 authentication failed") for c in claimed])
    campaign = await assert_counters_match(db, failing)
    assert campaign.status == "paused"
    assert campaign.status_reason == "paused automatically after 3 consecutive send failures"
    async with db.transaction() as session:
        names = (await session.execute(select(DomainEvent.name).where(DomainEvent.tenant_id == api.tenant.id)
                                       )).scalars().all()
    assert "crm.campaign.paused" in names


async def test_cancel_withdraws_pending_but_an_inflight_send_is_recorded(api: httpx.AsyncClient,
                                                                       db: Database) -> None:
    campaign_id = await running_campaign(api, await contacts(api, 4))
    inflight = await claim(db, limit=2, campaign_id=campaign_id)
    cancelled = await api.post(f"{CAMPAIGNS}/{campaign_id}/cancel")
    assert cancelled.status_code == 200, cancelled.text
    await record(db, [SendOutcome(inflight[0].id, ok=True, provider_message_id="pm"),
                      SendOutcome(inflight[1].id, ok=False, transient=True, error="421")])
    statuses = [r.status for r in await recipients(db, campaign_id)]
    assert statuses == ["sent", "cancelled", "cancelled", "cancelled"]
    campaign = await assert_counters_match(db, campaign_id)
    assert (campaign.status, campaign.sent, campaign.pending) == ("cancelled", 1, 0)


# --- campaign ticks ---------------------------------------------------------------------------------------

async def test_a_campaign_completes_only_when_nothing_is_pending_or_sending(api: httpx.AsyncClient,
                                                                           db: Database) -> None:
    campaign_id = await running_campaign(api, await contacts(api, 2))
    first, second = await claim(db, campaign_id=campaign_id)
    await record(db, [SendOutcome(first.id, ok=True)])
    async with db.transaction() as session:
        assert campaign_id not in await sending.complete_finished_campaigns(session, now=utcnow())
    await record(db, [SendOutcome(second.id, ok=False, error="550")])
    async with db.transaction() as session:
        assert campaign_id in await sending.complete_finished_campaigns(session, now=utcnow())
    async with db.transaction() as session:
        assert campaign_id not in await sending.complete_finished_campaigns(session, now=utcnow())
    campaign = await assert_counters_match(db, campaign_id)
    assert (campaign.status, campaign.completed_at) == ("completed", MONDAY_10)


async def test_a_scheduled_campaign_starts_when_its_day_comes(api: httpx.AsyncClient, db: Database) -> None:
    created = await new_campaign(api, daily_send_limit=10)
    await add_recipients(api, created["id"], {"emails": await contacts(api, 3)})
    activated = await api.post(f"{CAMPAIGNS}/{created['id']}/activate")  # tomorrow by default
    assert activated.json()["status"] == "scheduled"
    campaign_id = uuid.UUID(created["id"])
    # The ticks act on every tenant's campaigns: other tests' campaigns may start alongside this one.
    async with db.transaction() as session:
        assert campaign_id not in await sending.start_due_campaigns(session, now=utcnow())
    assert await claim(db, campaign_id=campaign_id) == []
    clock.advance(timedelta(hours=14, minutes=1))  # Tuesday 00:01
    async with db.transaction() as session:
        assert campaign_id in await sending.start_due_campaigns(session, now=utcnow())
    async with db.transaction() as session:
        assert campaign_id not in await sending.start_due_campaigns(session, now=utcnow())
    assert (await load_campaign(db, campaign_id)).status == "running"
    assert len(await claim(db, campaign_id=campaign_id)) == 3


def test_campaign_ticks_are_registered_with_the_worker() -> None:
    import clarion.api  # noqa: F401 - what the app and the worker import
    from clarion.worker import registry

    assert {"campaign.start_due", "campaign.complete_finished", "campaign.release_expired_leases"} <= \
        set(registry.ticks)


# --- links and money --------------------------------------------------------------------------------------

async def test_links_are_registered_once_per_campaign_and_found_by_id(api: httpx.AsyncClient,
                                                                     db: Database) -> None:
    campaign_id = uuid.UUID((await new_campaign(api))["id"])
    long_url = "https://example.com/p?" + "x" * 5000
    async with db.transaction() as session:
        first = await sending.register_links(session, tenant_id=api.tenant.id, campaign_id=campaign_id,
                                             urls=["https://a.example/", long_url, "https://a.example/"])
    async with db.transaction() as session:
        again = await sending.register_links(session, tenant_id=api.tenant.id, campaign_id=campaign_id,
                                             urls=["https://b.example/", "https://a.example/"])
    assert set(first) == {"https://a.example/", long_url}
    assert again["https://a.example/"] == first["https://a.example/"]
    assert again["https://b.example/"] not in first.values()
    async with db.transaction() as session:
        link = await sending.get_link(session, first[long_url])
        missing = await sending.get_link(session, 10**12)
    assert link == sending.LinkRef(first[long_url], api.tenant.id, campaign_id, long_url)
    assert missing is None


async def test_revenue_grows_in_sql(api: httpx.AsyncClient, db: Database) -> None:
    campaign_id = uuid.UUID((await new_campaign(api))["id"])
    for amount in (1999, 1):
        async with db.transaction() as session:
            await sending.add_revenue(session, tenant_id=api.tenant.id, campaign_id=campaign_id, recipient_id=None,
                                      amount=amount)
    assert (await load_campaign(db, campaign_id)).revenue == 2000
    with pytest.raises(NotFound):
        async with db.transaction() as session:
            await sending.add_revenue(session, tenant_id=uuid.uuid4(), campaign_id=campaign_id, recipient_id=None,
                                      amount=5)
    assert (await load_campaign(db, campaign_id)).revenue == 2000
