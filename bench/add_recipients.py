"""Bench (b): adding recipients from a filter through Clarion vs one hand-written INSERT … SELECT.

    python -m bench.add_recipients [--contacts N] [--db sqlite|postgres|both]

Setup (raw SQL, untimed): a freshly migrated database, N contacts of one tenant with an email subscription
each (every 10th is gold-less, every 25th unsubscribed), two email campaigns whose filter is
attributes.tier eq "gold" (about 90% of the contacts). Then, in one process, times
  (1) Clarion: campaign service add_recipients(use_target_audience=True) on the first campaign, committed;
  (2) raw: INSERT INTO campaign_recipients … SELECT … FROM contacts WHERE <same predicate, hand-written>
      into the second campaign, committed.
Target: Clarion takes at most 1.5× the raw statement.
"""

from __future__ import annotations

import argparse
import asyncio
import sqlite3
import tempfile
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench.common import migrated_sqlite, postgres_database

TARGET_RATIO = 1.5
GOLD_FILTER = {"field": "attributes.tier", "op": "eq", "value": "gold"}
STAMP = datetime(2025, 1, 1, tzinfo=UTC)

# contacts i = 0 … N-1: tier silver when i % 10 == 0, email unsubscribed when i % 25 == 0. Ids rise with i, as
# Clarion's uuid7 ids rise with creation time.
_SQLITE_LOAD = """
WITH RECURSIVE seq(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM seq WHERE i < :n - 1)
INSERT INTO contacts (id, tenant_id, email, phone, attributes, tags, created_at, updated_at)
SELECT printf('%016x', i) || lower(hex(randomblob(8))), :tenant, 'user' || i || '@example.com', NULL,
       CASE WHEN i % 10 = 0 THEN '{"tier": "silver"}' ELSE '{"tier": "gold"}' END, '[]', :stamp, :stamp
FROM seq
"""
_SQLITE_SUBSCRIPTIONS = """
INSERT INTO contact_subscriptions (contact_id, channel, status, changed_at, source, tenant_id)
SELECT id, 'email',
       CASE WHEN CAST(substr(email, 5, instr(email, '@') - 5) AS INTEGER) % 25 = 0
            THEN 'unsubscribed' ELSE 'subscribed' END, :stamp, 'bench', :tenant
FROM contacts WHERE tenant_id = :tenant
"""
_PG_LOAD = """
INSERT INTO contacts (id, tenant_id, email, phone, attributes, tags, created_at, updated_at)
SELECT (lpad(to_hex(i), 16, '0') || substr(md5(random()::text), 1, 16))::uuid, %(tenant)s, 'user' || i || '@example.com', NULL,
       CASE WHEN i %% 10 = 0 THEN '{"tier": "silver"}'::jsonb ELSE '{"tier": "gold"}'::jsonb END, '[]'::jsonb,
       %(stamp)s, %(stamp)s
FROM generate_series(0, %(n)s - 1) AS i
"""
_PG_SUBSCRIPTIONS = """
INSERT INTO contact_subscriptions (contact_id, channel, status, changed_at, source, tenant_id)
SELECT id, 'email',
       CASE WHEN split_part(substr(email, 5), '@', 1)::int %% 25 = 0 THEN 'unsubscribed' ELSE 'subscribed' END,
       %(stamp)s, 'bench', %(tenant)s
FROM contacts WHERE tenant_id = %(tenant)s
"""

# The raw baseline: the same predicate as Clarion's (tenant, tier = gold, subscribed on email), written by hand.
_RAW_INSERT = """
INSERT INTO campaign_recipients (tenant_id, campaign_id, contact_id, email, phone, status, open_count,
                                 click_count, retry_count, created_at, updated_at)
SELECT {tenant}, {campaign}, c.id, c.email, c.phone, 'pending', 0, 0, 0, {stamp}, {stamp}
FROM contacts c
WHERE c.tenant_id = {tenant} AND {tier} = 'gold'
  AND EXISTS (SELECT 1 FROM contact_subscriptions s
              WHERE s.contact_id = c.id AND s.channel = 'email' AND s.status = 'subscribed')
ON CONFLICT (campaign_id, contact_id) DO NOTHING
"""


async def _make_tenant_and_campaigns(url: str) -> tuple[uuid.UUID, uuid.UUID, uuid.UUID]:
    from clarion.campaign import service as campaigns
    from clarion.campaign.schemas import CampaignCreate
    from clarion.db import Database
    from clarion.tenancy import service as tenancy

    db = Database(url)
    try:
        async with db.transaction() as session:
            tenant = await tenancy.create_tenant(session, "bench")
            ids = []
            for name in ("clarion", "raw"):
                campaign = await campaigns.create_campaign(session, tenant.id, CampaignCreate(
                    name=f"bench {name}", channel="email", filter=GOLD_FILTER))
                ids.append(campaign.id)
        return tenant.id, ids[0], ids[1]
    finally:
        await db.dispose()


async def _clarion_add(url: str, tenant_id: uuid.UUID, campaign_id: uuid.UUID) -> tuple[float, Any]:
    from clarion.campaign import service as campaigns
    from clarion.db import Database

    db = Database(url)
    try:
        async with db.transaction() as session:  # warm the pool and the tenant's pages outside the timing
            await campaigns.get_campaign(session, tenant_id, campaign_id)
        started = time.perf_counter()
        async with db.transaction() as session:
            result = await campaigns.add_recipients(session, tenant_id, campaign_id, use_target_audience=True)
        return time.perf_counter() - started, result
    finally:
        await db.dispose()


def report(label: str, contacts: int, clarion_s: float, raw_s: float, clarion_rows: int, raw_rows: int) -> None:
    ratio = clarion_s / raw_s
    verdict = "met" if ratio <= TARGET_RATIO else "NOT met"
    print(f"[{label}] {contacts:,} contacts; recipients added: clarion {clarion_rows:,}, raw {raw_rows:,}")
    print(f"  clarion add_recipients : {clarion_s:8.2f} s")
    print(f"  raw INSERT … SELECT    : {raw_s:8.2f} s")
    print(f"  ratio                  : {ratio:8.2f}×  (target <= {TARGET_RATIO}×: {verdict})")


def bench_sqlite(contacts: int, workdir: Path) -> None:
    path = workdir / "clarion.db"
    url = migrated_sqlite(path)
    tenant_id, clarion_campaign, raw_campaign = asyncio.run(_make_tenant_and_campaigns(url))
    stamp = STAMP.replace(tzinfo=None).isoformat(sep=" ", timespec="microseconds")
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=NORMAL")
    started = time.perf_counter()
    with conn:
        conn.execute(_SQLITE_LOAD, {"n": contacts, "tenant": tenant_id.hex, "stamp": stamp})
        conn.execute(_SQLITE_SUBSCRIPTIONS, {"tenant": tenant_id.hex, "stamp": stamp})
    conn.execute("ANALYZE")
    print(f"[sqlite] loaded {contacts:,} contacts in {time.perf_counter() - started:.1f} s")

    clarion_s, result = asyncio.run(_clarion_add(url, tenant_id, clarion_campaign))
    raw_sql = _RAW_INSERT.format(tenant=":tenant", campaign=":campaign", stamp=":stamp",
                                 tier="json_extract(c.attributes, '$.tier')")
    started = time.perf_counter()
    with conn:
        raw_rows = conn.execute(raw_sql, {"tenant": tenant_id.hex, "campaign": raw_campaign.hex,
                                          "stamp": stamp}).rowcount
    raw_s = time.perf_counter() - started
    conn.close()
    report("sqlite", contacts, clarion_s, raw_s, result.recipients_added, raw_rows)


def bench_postgres(contacts: int) -> None:
    import psycopg

    with postgres_database() as (url, plain_url):
        tenant_id, clarion_campaign, raw_campaign = asyncio.run(_make_tenant_and_campaigns(url))
        started = time.perf_counter()
        with psycopg.connect(plain_url) as conn:
            conn.execute(_PG_LOAD, {"n": contacts, "tenant": tenant_id, "stamp": STAMP})
            conn.execute(_PG_SUBSCRIPTIONS, {"tenant": tenant_id, "stamp": STAMP})
            conn.commit()
            conn.autocommit = True
            conn.execute("VACUUM ANALYZE")
        print(f"[postgres] loaded {contacts:,} contacts in {time.perf_counter() - started:.1f} s")

        clarion_s, result = asyncio.run(_clarion_add(url, tenant_id, clarion_campaign))
        raw_sql = _RAW_INSERT.format(tenant="%(tenant)s", campaign="%(campaign)s", stamp="%(stamp)s",
                                     tier="c.attributes ->> 'tier'")
        with psycopg.connect(plain_url) as conn:
            started = time.perf_counter()
            raw_rows = conn.execute(raw_sql, {"tenant": tenant_id, "campaign": raw_campaign,
                                              "stamp": STAMP}).rowcount
            conn.commit()
            raw_s = time.perf_counter() - started
        report("postgres", contacts, clarion_s, raw_s, result.recipients_added, raw_rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--contacts", type=int, default=1_000_000)
    parser.add_argument("--db", choices=("sqlite", "postgres", "both"), default="both")
    args = parser.parse_args()
    if args.db in ("sqlite", "both"):
        with tempfile.TemporaryDirectory(prefix="clarion-bench-") as tmp:
            bench_sqlite(args.contacts, Path(tmp))
    if args.db in ("postgres", "both"):
        bench_postgres(args.contacts)


if __name__ == "__main__":
    main()
