"""The event log's monthly partitions on PostgreSQL: rows land in their month's partition, rows no month covers
wait in DEFAULT and move when the tick creates their month, the tick is idempotent, and the event pages read
straight across partitions. On SQLite the table stays plain and the tick does nothing.

Each test uses months of its own: the PostgreSQL database is shared by the whole test session.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import httpx
import pytest
from sqlalchemy import select, text

from clarion.campaign import claims, event_partitions, sending
from clarion.campaign import service as campaigns
from clarion.campaign.schemas import CampaignCreate
from clarion.campaign.sending import EventInput
from clarion.config import Settings
from clarion.db import Database
from clarion.kit.clock import clock
from clarion.models import CampaignEvent
from clarion.models.campaign_events import EVENTS_DEFAULT_PARTITION
from clarion.worker import Registry, Worker, registry
from tests.campaign.helpers import CAMPAIGNS
from tests.conftest import TenantHandle, make_tenant
from tests.worker.conftest import reset_queue

only_postgres = pytest.mark.parametrize("backend", ["postgres"], indirect=True, scope="session")


async def new_campaign(db: Database, tenant_id: uuid.UUID) -> uuid.UUID:
    async with db.transaction() as session:
        return (await campaigns.create_campaign(session, tenant_id, CampaignCreate(name="Log", channel="email"))).id


async def record(db: Database, tenant_id: uuid.UUID, campaign_id: uuid.UUID, *moments: datetime) -> list[int]:
    """One `delivered` event (no recipient) per moment, through the service; their ids in order."""
    async with db.transaction() as session:
        await sending.record_events(session, [EventInput(tenant_id, campaign_id, None, "delivered", at, {"n": i})
                                              for i, at in enumerate(moments)])
        stmt = select(CampaignEvent.id).where(CampaignEvent.campaign_id == campaign_id).order_by(CampaignEvent.id)
        return list((await session.execute(stmt)).scalars())


async def partition_of(db: Database, event_ids: list[int]) -> dict[int, str]:
    """event id → the partition (table) its row is stored in."""
    async with db.transaction() as session:
        rows = await session.execute(text("SELECT id, tableoid::regclass::text FROM campaign_events "
                                          "WHERE id = ANY(:ids)"), {"ids": event_ids})
        return dict(rows.all())


async def partitions(db: Database) -> set[str]:
    async with db.transaction() as session:
        rows = await session.execute(text("SELECT inhrelid::regclass::text FROM pg_inherits "
                                          "WHERE inhparent = 'campaign_events'::regclass"))
        return set(rows.scalars())


async def ensure(db: Database, now: datetime) -> event_partitions.PartitionUpkeep:
    async with db.transaction() as session:
        return await event_partitions.ensure_event_partitions(session, now=now)


@only_postgres
async def test_the_table_is_partitioned_by_month_with_a_default(db: Database) -> None:
    async with db.transaction() as session:
        strategy, key = (await session.execute(text(
            "SELECT p.partstrat, a.attname FROM pg_partitioned_table p "
            "JOIN pg_attribute a ON a.attrelid = p.partrelid AND a.attnum = p.partattrs[0] "
            "WHERE p.partrelid = 'campaign_events'::regclass"))).one()
        primary_key = (await session.execute(text(
            "SELECT array_agg(a.attname ORDER BY a.attnum) FROM pg_index i JOIN pg_attribute a "
            "ON a.attrelid = i.indrelid AND a.attnum = ANY(i.indkey) "
            "WHERE i.indrelid = 'campaign_events'::regclass AND i.indisprimary"))).scalar_one()
    assert (strategy, key) == ("r", "occurred_at")
    assert sorted(primary_key) == ["id", "occurred_at"]
    assert EVENTS_DEFAULT_PARTITION in await partitions(db)


@only_postgres
async def test_events_land_in_their_months_partition(db: Database, tenant: TenantHandle) -> None:
    upkeep = await ensure(db, datetime(2031, 5, 10, 12, tzinfo=UTC))
    # The current month and the next three (and any month other tests left rows of in DEFAULT).
    assert {"2031-05-01", "2031-06-01", "2031-07-01", "2031-08-01"} <= {m.isoformat() for m in upkeep.created}
    assert "2031-09-01" not in {m.isoformat() for m in upkeep.created}
    assert {"campaign_events_y2031m05", "campaign_events_y2031m08"} <= await partitions(db)

    campaign_id = await new_campaign(db, tenant.id)
    june = datetime(2031, 6, 1, tzinfo=UTC)
    ids = await record(db, tenant.id, campaign_id, june - timedelta(microseconds=1), june,
                       datetime(2031, 8, 31, 23, 59, tzinfo=UTC), datetime(2031, 9, 1, tzinfo=UTC))
    where = await partition_of(db, ids)
    assert [where[i] for i in ids] == ["campaign_events_y2031m05", "campaign_events_y2031m06",
                                       "campaign_events_y2031m08", EVENTS_DEFAULT_PARTITION]


@only_postgres
async def test_events_no_month_covers_wait_in_default_and_move_when_the_tick_creates_their_month(
        db: Database, api: httpx.AsyncClient) -> None:
    await ensure(db, datetime(2032, 3, 1, tzinfo=UTC))  # months exist, but none for 1999
    tenant_id = api.tenant.id  # type: ignore[attr-defined]
    campaign_id = await new_campaign(db, tenant_id)
    moments = [datetime(1999, 3, 15, tzinfo=UTC), datetime(1998, 12, 31, 23, 30, tzinfo=UTC),
               datetime(1999, 3, 31, 23, 59, 59, tzinfo=UTC)]
    ids = await record(db, tenant_id, campaign_id, *moments)
    assert set((await partition_of(db, ids)).values()) == {EVENTS_DEFAULT_PARTITION}
    before = (await api.get(f"{CAMPAIGNS}/{campaign_id}/events", params={"limit": 500})).json()["items"]

    upkeep = await ensure(db, datetime(2032, 3, 1, tzinfo=UTC))

    assert {m.isoformat() for m in upkeep.created} >= {"1998-12-01", "1999-03-01"}
    assert upkeep.moved >= 3  # ours, and any other test's rows of those months
    where = await partition_of(db, ids)
    assert [where[i] for i in ids] == ["campaign_events_y1999m03", "campaign_events_y1998m12",
                                       "campaign_events_y1999m03"]
    async with db.transaction() as session:
        left = (await session.execute(text(f"SELECT count(*) FROM {EVENTS_DEFAULT_PARTITION} "
                                           "WHERE occurred_at < '2000-01-01'"))).scalar_one()
    assert left == 0
    # Moved rows keep their ids and everything else: the event pages read the same, newest (highest id) first.
    after = (await api.get(f"{CAMPAIGNS}/{campaign_id}/events", params={"limit": 500})).json()["items"]
    assert after == before
    assert [e["id"] for e in after] == sorted(ids, reverse=True)
    first = (await api.get(f"{CAMPAIGNS}/{campaign_id}/events", params={"limit": 2})).json()
    rest = (await api.get(f"{CAMPAIGNS}/{campaign_id}/events",
                          params={"limit": 2, "cursor": first["next_cursor"]})).json()
    assert [e["id"] for e in first["items"] + rest["items"]] == sorted(ids, reverse=True)
    assert rest["next_cursor"] is None


@only_postgres
async def test_the_tick_is_idempotent(db: Database, tenant: TenantHandle) -> None:
    now = datetime(2033, 11, 20, tzinfo=UTC)
    campaign_id = await new_campaign(db, tenant.id)
    ids = await record(db, tenant.id, campaign_id, datetime(2033, 12, 24, tzinfo=UTC),
                       datetime(1997, 7, 4, tzinfo=UTC))
    first = await ensure(db, now)
    assert {m.isoformat() for m in first.created} >= {"2033-11-01", "2034-02-01", "1997-07-01"}
    layout, where = await partitions(db), await partition_of(db, ids)

    again = await ensure(db, now)

    assert (again.created, again.moved) == ([], 0)
    assert await partitions(db) == layout
    assert await partition_of(db, ids) == where == {ids[0]: "campaign_events_y2033m12",
                                                    ids[1]: "campaign_events_y1997m07"}


@only_postgres
async def test_the_tick_waits_out_a_writer_instead_of_deadlocking_with_it(db: Database,
                                                                        tenant: TenantHandle) -> None:
    """A send's outcome writes recipients, then events; creating a partition locks events, then the tables its
    foreign keys name (recipients among them). Interleaved, the two would deadlock; the tick must not."""
    from clarion.audience import service as audience
    from clarion.audience.schemas import ContactCreate
    from clarion.campaign.schemas import RecipientsAdd

    async with db.transaction() as session:
        contact = await audience.create_contact(session, tenant.id, ContactCreate(email="w@example.com"))
        campaign = await campaigns.create_campaign(session, tenant.id, CampaignCreate(name="W", channel="email"))
        await campaigns.add_recipients(session, tenant.id, campaign.id, RecipientsAdd(contact_ids=[contact.id]))
        await campaigns.start(session, tenant.id, campaign.id)
    async with db.transaction() as session:
        claimed = await claims.claim_due(session, now=clock.now(), limit=1, lease_owner="writer", lease_seconds=60,
                                          campaign_id=campaign.id)  # the writer now holds campaign_recipients
        assert len(claimed) == 1
        tick = asyncio.create_task(ensure(db, datetime(2035, 1, 10, tzinfo=UTC)))
        await asyncio.sleep(0.5)  # the tick tries its locks meanwhile
        assert not tick.done()
        await sending.record_events(session, [EventInput(tenant.id, campaign.id, claimed[0].id, "delivered",
                                                         datetime(2035, 1, 11, tzinfo=UTC))])
    upkeep = await asyncio.wait_for(tick, 30)
    assert {"2035-01-01", "2035-02-01", "2035-03-01", "2035-04-01"} <= {m.isoformat() for m in upkeep.created}
    async with db.transaction() as session:
        stored = (await session.execute(select(CampaignEvent.id).where(CampaignEvent.campaign_id == campaign.id)
                                        )).scalars().all()
    assert list((await partition_of(db, list(stored))).values()) == ["campaign_events_y2035m01"]


@only_postgres
async def test_the_worker_runs_the_registered_tick_once_per_interval(db: Database, settings: Settings) -> None:
    spec = registry.ticks["campaign.ensure_event_partitions"]
    assert spec.singleton and spec.interval == timedelta(hours=1)
    await reset_queue(db)  # no other test's jobs or tick rows for this worker to pick up
    try:
        worker = Worker(db, registry=Registry(ticks={spec.name: spec}), settings=settings, poll_interval=0.02)
        clock.freeze(datetime(2034, 6, 15, 8, tzinfo=UTC))
        await worker.run_once()
        assert {"campaign_events_y2034m06", "campaign_events_y2034m09"} <= await partitions(db)
        assert "campaign_events_y2034m10" not in await partitions(db)
        clock.freeze(datetime(2034, 7, 1, 8, tzinfo=UTC))
        await worker.run_once()
        assert "campaign_events_y2034m10" in await partitions(db)
    finally:
        await reset_queue(db)


async def test_sqlite_keeps_a_plain_table_and_the_tick_does_nothing(
        plain_db: tuple[Database, uuid.UUID]) -> None:
    db, tenant_id = plain_db
    upkeep = await ensure(db, datetime(2031, 5, 10, tzinfo=UTC))
    assert (upkeep.created, upkeep.moved) == ([], 0)
    campaign_id = await new_campaign(db, tenant_id)
    ids = await record(db, tenant_id, campaign_id, datetime(1999, 3, 15, tzinfo=UTC))
    async with db.transaction() as session:
        tables = set((await session.execute(text(
            "SELECT name FROM sqlite_master WHERE type = 'table' AND name LIKE 'campaign_events%'"))).scalars())
    assert tables == {"campaign_events"}
    assert len(ids) == 1


@pytest.fixture
async def plain_db(sqlite_url: str) -> AsyncIterator[tuple[Database, uuid.UUID]]:
    """The session's SQLite database, whatever backend the run is on, with a tenant of its own."""
    database = Database(sqlite_url)
    try:
        yield database, (await make_tenant(database, "Plain")).id
    finally:
        await database.dispose()
