"""record_events (a batch, a constant number of statements) does exactly what record_event does one by one."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from itertools import pairwise
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import event as sa_event
from sqlalchemy import select

from clarion.audience import service as audience
from clarion.audience.schemas import ContactCreate
from clarion.campaign import claims, sending
from clarion.campaign import service as campaigns
from clarion.campaign.schemas import CampaignCreate, RecipientsAdd
from clarion.campaign.sending import EventInput, SendOutcome
from clarion.db import Database
from clarion.errors import NotFound
from clarion.kit.clock import clock
from clarion.models import Campaign, CampaignEvent, CampaignRecipient, DomainEvent
from tests.conftest import make_tenant

T0 = datetime(2025, 1, 6, 10, 0, tzinfo=UTC)
RECIPIENTS = 4  # the last one is never sent: its events are stored but move nothing
TYPES = ["opened", "clicked", "converted", "delivered", "bounced", "failed", "sent", "unsubscribed"]
COUNTERS = ("total_target", "pending", "sent", "delivered", "opened", "clicked", "converted", "failed", "bounced",
            "skipped", "opened_total", "clicked_total")
STATE = ("status", "sent_at", "delivered_at", "opened_at", "clicked_at", "converted_at", "failed_at", "open_count",
         "click_count", "failure_reason")

# (recipient position, type, machine?, metadata reason, minutes after the send: out of order on purpose)
EVENT = st.tuples(st.integers(0, RECIPIENTS - 1), st.sampled_from(TYPES), st.booleans(),
                  st.sampled_from([None, "5.1.1 user unknown", "mailbox full"]), st.integers(-5, 120))


async def _sent_campaign(db: Database, tenant_id: uuid.UUID, contact_ids: list[uuid.UUID]) -> tuple[uuid.UUID,
                                                                                                    list[int]]:
    """A running email campaign over the contacts; all but the last recipient sent. Recipient ids in order."""
    clock.freeze(T0)
    async with db.transaction() as session:
        campaign = await campaigns.create_campaign(session, tenant_id, CampaignCreate(name="Prop", channel="email"))
        await campaigns.add_recipients(session, tenant_id, campaign.id, RecipientsAdd(contact_ids=contact_ids))
        await campaigns.start(session, tenant_id, campaign.id)
    owner = f"prop-{uuid.uuid4().hex[:6]}"
    async with db.transaction() as session:
        claimed = await claims.claim_due(session, now=T0, limit=len(contact_ids) - 1, lease_owner=owner,
                                          lease_seconds=60, campaign_id=campaign.id)
        ids = (await session.execute(select(CampaignRecipient.id).where(CampaignRecipient.campaign_id == campaign.id)
                                     .order_by(CampaignRecipient.id))).scalars().all()
    assert [c.id for c in claimed] == list(ids[:-1])
    async with db.transaction() as session:
        await sending.record_outcomes(session, [SendOutcome(c.id, ok=True, provider_message_id=f"pm-{c.id}")
                                                for c in claimed], now=T0, lease_owner=owner)
    clock.freeze(T0 + timedelta(hours=3))
    return campaign.id, list(ids)


def _inputs(tenant_id: uuid.UUID, campaign_id: uuid.UUID, ids: list[int],
            drawn: list[tuple[int, str, bool, str | None, int]]) -> list[EventInput]:
    events = []
    for position, type_, machine, reason, minutes in drawn:
        metadata: dict[str, Any] = {"n": len(events)}
        if machine:
            metadata["flags"] = {"machine": True, "reason": "image_proxy"}
        if reason:
            metadata["reason"] = reason
        events.append(EventInput(tenant_id, campaign_id, ids[position], type_, T0 + timedelta(minutes=minutes),
                                 metadata))
    return events


async def _snapshot(db: Database, campaign_id: uuid.UUID, ids: list[int]) -> dict[str, Any]:
    position = {rid: i for i, rid in enumerate(ids)}
    async with db.transaction() as session:
        campaign = await session.get(Campaign, campaign_id, populate_existing=True)
        assert campaign is not None
        rows = (await session.execute(select(CampaignRecipient).where(CampaignRecipient.campaign_id == campaign_id)
                                      .order_by(CampaignRecipient.id)
                                      .execution_options(populate_existing=True))).scalars().all()
        events = (await session.execute(select(CampaignEvent).where(CampaignEvent.campaign_id == campaign_id)
                                        .order_by(CampaignEvent.id))).scalars().all()
        domain = (await session.execute(select(DomainEvent.name, DomainEvent.payload)
                                        .order_by(DomainEvent.id))).all()
    return {
        "counters": {name: getattr(campaign, name) for name in COUNTERS},
        "recipients": [{name: getattr(r, name) for name in STATE} for r in rows],
        "events": [(position[e.recipient_id], e.contact_id is not None, e.type, e.occurred_at, e.metadata_)
                   for e in events],
        "domain_events": [(name, position[payload["recipient_id"]]) for name, payload in domain
                          if payload.get("campaign_id") == str(campaign_id) and "recipient_id" in payload],
    }


@pytest.fixture(scope="module")
async def contacts_of(db: Database) -> tuple[uuid.UUID, list[uuid.UUID]]:
    tenant = await make_tenant(db, "Record events")
    async with db.transaction() as session:
        ids = [(await audience.create_contact(session, tenant.id, ContactCreate(email=f"p{i}@example.com"))).id
               for i in range(RECIPIENTS)]
    return tenant.id, ids


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(drawn=st.lists(EVENT, min_size=1, max_size=30), cuts=st.lists(st.integers(1, 29), max_size=6))
async def test_batches_give_exactly_what_one_by_one_gives(db: Database, contacts_of: tuple[uuid.UUID,
                                                                                          list[uuid.UUID]],
                                                          drawn: list[tuple[int, str, bool, str | None, int]],
                                                          cuts: list[int]) -> None:
    tenant_id, contact_ids = contacts_of
    try:
        one_id, one_ids = await _sent_campaign(db, tenant_id, contact_ids)
        batch_id, batch_ids = await _sent_campaign(db, tenant_id, contact_ids)
        moved_one = []
        for e in _inputs(tenant_id, one_id, one_ids, drawn):
            async with db.transaction() as session:
                moved_one.append(await sending.record_event(
                    session, tenant_id=e.tenant_id, campaign_id=e.campaign_id, recipient_id=e.recipient_id,
                    type=e.type, occurred_at=e.occurred_at, metadata=e.metadata))
        events = _inputs(tenant_id, batch_id, batch_ids, drawn)
        bounds = sorted({0, len(events), *(c for c in cuts if c < len(events))})
        moved_batch: list[bool] = []
        for start, end in pairwise(bounds):
            async with db.transaction() as session:
                moved_batch.extend(await sending.record_events(session, events[start:end]))
        assert moved_batch == moved_one
        assert await _snapshot(db, batch_id, batch_ids) == await _snapshot(db, one_id, one_ids)
    finally:
        clock.reset()


async def test_a_batch_takes_a_constant_number_of_statements(db: Database,
                                                             contacts_of: tuple[uuid.UUID, list[uuid.UUID]]) -> None:
    tenant_id, contact_ids = contacts_of
    campaign_id, ids = await _sent_campaign(db, tenant_id, contact_ids)
    statements: list[str] = []

    def count(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        statements.append(statement.split(None, 1)[0].upper())

    sa_event.listen(db.engine.sync_engine, "before_cursor_execute", count)
    try:
        async with db.transaction() as session:
            events = [EventInput(tenant_id, campaign_id, ids[i % 3], ("opened", "clicked")[i % 2],
                                 T0 + timedelta(minutes=i), {"flags": {"machine": i % 5 == 0}}) for i in range(300)]
            moved = await sending.record_events(session, events)
            await session.flush()
    finally:
        sa_event.remove(db.engine.sync_engine, "before_cursor_execute", count)
    assert 0 < sum(moved) <= 6  # each sent recipient moves at most twice: to opened, then to clicked
    # lock (+ SQLite's write-lock take), SELECT, one INSERT of 300 events, one UPDATE of recipients, one UPDATE
    # of the campaign, the domain events' INSERT: never one per event.
    assert len(statements) <= 8, statements
    counters = (await _snapshot(db, campaign_id, ids))["counters"]
    assert (counters["opened_total"], counters["clicked_total"]) == (150, 150)


async def test_a_batch_naming_a_foreign_recipient_writes_nothing(db: Database,
                                                                 contacts_of: tuple[uuid.UUID,
                                                                                    list[uuid.UUID]]) -> None:
    tenant_id, contact_ids = contacts_of
    campaign_id, ids = await _sent_campaign(db, tenant_id, contact_ids)
    other_id, other_ids = await _sent_campaign(db, tenant_id, contact_ids)
    with pytest.raises(NotFound):
        async with db.transaction() as session:
            await sending.record_events(session, [
                EventInput(tenant_id, campaign_id, ids[0], "opened", T0),
                EventInput(tenant_id, campaign_id, other_ids[0], "opened", T0),
            ])
    async with db.transaction() as session:
        moved = await sending.record_events(session, [
            EventInput(tenant_id, campaign_id, None, "note", T0, {"free": "text"}),
            EventInput(tenant_id, campaign_id, ids[0], "opened", T0, counts=False),
            EventInput(tenant_id, campaign_id, ids[1], "opened", T0),
        ])
    assert moved == [False, False, True]
    snapshot = await _snapshot(db, campaign_id, ids + [None])  # type: ignore[list-item]
    assert [(e[0], e[2]) for e in snapshot["events"] if e[2] != "sent"] == [(RECIPIENTS, "note"), (0, "opened"),
                                                                             (1, "opened")]
    assert [r["status"] for r in snapshot["recipients"]] == ["sent", "opened", "sent", "pending"]
    assert (await _snapshot(db, other_id, other_ids))["counters"]["opened_total"] == 0
