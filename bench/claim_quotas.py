"""Bench: claiming a batch through an account with a messaging-limit tier vs the same claim without one.

    python -m bench.claim_quotas [--pending N] [--window W] [--batches B] [--db sqlite|postgres|both]

Setup (raw SQL, untimed): one tenant, N + W contacts subscribed on WhatsApp; campaign A with N due recipients;
campaign B whose W recipients were sent through the account within the last 24 hours (a tier-100,000 number
well into its day), with the account's reach ledger to match. Then, in one process, B batches of 500 each way,
every batch in a transaction rolled back so each meets the same rows:
  (1) plain: the claim as an untiered account makes it (campaign.claims_repository.claim, recording the account);
  (2) tiered: the tier's lock and count (send_quotas.claim_account), the claim that keeps the new recipients
      within what the tier leaves, and recording whom it reached (send_quotas.record_claims).
Prints both times per batch, their ratio and the tier's cost per claimed message. Target: the tier adds at most
100 µs per claimed message (5% of the ≈ 2 ms a message takes through the whole pipeline, bench send_pipeline).
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

from sqlalchemy import TextClause, bindparam, text

from bench.common import migrated_sqlite, postgres_database
from clarion.kit.types import UTCDateTime

BATCH = 500
TIER = 100_000
TARGET_OVERHEAD_US = 100.0


def _sql(statement: str) -> TextClause:
    """Raw SQL whose time parameters are bound as the models bind them (ISO text on SQLite)."""
    times = [name for name in ("now", "due", "sent") if f":{name}" in statement]
    return text(statement).bindparams(*(bindparam(name, type_=UTCDateTime()) for name in times))


async def _setup(url: str, pending: int, window: int) -> tuple[uuid.UUID, uuid.UUID, uuid.UUID]:
    """(tenant, campaign A, account id), rows loaded set-based in SQL."""
    from clarion.campaign import service as campaigns
    from clarion.campaign.schemas import CampaignCreate
    from clarion.db import Database
    from clarion.tenancy import service as tenancy

    db = Database(url)
    now = datetime.now(UTC)
    account = uuid.uuid4()
    pg = db.dialect == "postgresql"
    try:
        async with db.transaction() as session:
            tenant = await tenancy.create_tenant(session, "bench")
            a = await campaigns.create_campaign(session, tenant.id, CampaignCreate(name="A", channel="whatsapp"))
            b = await campaigns.create_campaign(session, tenant.id, CampaignCreate(name="B", channel="whatsapp"))
        seq = ("generate_series(0, :n - 1) AS s(i)" if pg else
               "(WITH RECURSIVE s(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM s WHERE i < :n - 1) SELECT i FROM s) s")
        new_id = ("(lpad(to_hex(i), 16, '0') || substr(md5(random()::text), 1, 16))::uuid" if pg else
                  "printf('%016x', i) || lower(hex(randomblob(8)))")
        key = (lambda v: v) if pg else (lambda v: v.hex)
        # Phones are '+1' followed by 2000000000 + i: the first `pending` contacts go to A, the rest to B.
        params = {"tenant": key(tenant.id), "now": now, "n": pending + window, "cut": f"+1{2000000000 + pending}"}
        async with db.transaction() as session:
            await session.execute(_sql(
                f"INSERT INTO contacts (id, tenant_id, phone, attributes, tags, created_at, updated_at) "
                f"SELECT {new_id}, :tenant, '+1' || (2000000000 + i), '{{}}', '[]', :now, :now FROM {seq}"), params)
            await session.execute(_sql(
                "INSERT INTO contact_subscriptions (contact_id, channel, status, changed_at, source, tenant_id) "
                "SELECT id, 'whatsapp', 'subscribed', :now, 'bench', :tenant FROM contacts WHERE tenant_id = :tenant"),
                params)
            recipient = ("INSERT INTO campaign_recipients (tenant_id, campaign_id, contact_id, phone, status, "
                         "send_after, sent_at, channel_config_id, open_count, click_count, retry_count, created_at, "
                         "updated_at) SELECT :tenant, :campaign, id, phone, {status}, :due, {sent}, {account}, 0, 0, "
                         "0, :now, :now FROM contacts WHERE tenant_id = :tenant AND phone {part} :cut")
            await session.execute(_sql(recipient.format(status="'pending'", sent="NULL", account="NULL", part="<")),
                                  {**params, "campaign": key(a.id), "due": now - timedelta(hours=1)})
            await session.execute(_sql(recipient.format(status="'sent'", sent=":sent", account=":account",
                                                        part=">=")),
                                  {**params, "campaign": key(b.id), "due": now - timedelta(hours=2),
                                   "sent": now - timedelta(hours=3), "account": key(account)})
            await session.execute(_sql(
                "INSERT INTO account_reach (tenant_id, channel_config_id, contact_id, last_messaged_at) "
                "SELECT tenant_id, channel_config_id, contact_id, sent_at FROM campaign_recipients "
                "WHERE campaign_id = :campaign"), {"campaign": key(b.id)})
            await session.execute(text("ANALYZE"))
        return tenant.id, a.id, account
    finally:
        await db.dispose()


async def _time_claims(url: str, tenant_id: uuid.UUID, campaign_id: uuid.UUID, account: uuid.UUID,
                       batches: int) -> tuple[list[float], list[float], int, int]:
    from clarion.campaign import claims_repository as repo
    from clarion.campaign import send_quotas as quotas
    from clarion.db import Database

    db = Database(url)
    due = repo.DueCampaign(id=campaign_id, tenant_id=tenant_id, channel="whatsapp", priority=5,
                           daily_send_limit=None, daily_sent_date=None, daily_sent_count=0, send_window=None,
                           local_time=False, channel_config_id=account)
    tiered_account = quotas.SendAccount(channel_config_id=account, unique_recipients_per_window=TIER)

    async def once(tiered: bool) -> tuple[float, int]:
        now = datetime.now(UTC)
        async with db.sessions() as session:
            started = time.perf_counter()
            through = (await quotas.claim_account(session, tiered_account, now=now) if tiered
                       else repo.AccountQuota(account))
            rows = await repo.claim(session, due, now=now, limit=BATCH, lease_owner="bench",
                                    lease_until=now + timedelta(minutes=5), account=through)
            if tiered:
                await quotas.record_claims(session, through, rows, now=now)
            elapsed = time.perf_counter() - started
            await session.rollback()
        return elapsed, len(rows)

    try:
        await once(False)
        await once(True)  # warm both statements' caches and pages
        plain: list[float] = []
        tiered: list[float] = []
        for _ in range(batches):  # interleaved, so load on the machine hits both alike
            seconds, plain_rows = await once(False)
            plain.append(seconds)
            seconds, tiered_rows = await once(True)
            tiered.append(seconds)
        return plain, tiered, plain_rows, tiered_rows
    finally:
        await db.dispose()


def _report(label: str, pending: int, window: int, plain: list[float], tiered: list[float], plain_rows: int,
            tiered_rows: int) -> None:
    p, t = statistics.median(plain), statistics.median(tiered)
    overhead_us = (t - p) / max(1, tiered_rows) * 1e6
    verdict = "met" if overhead_us <= TARGET_OVERHEAD_US else "NOT met"
    print(f"[{label}] {pending:,} due recipients, {window:,} sent through the account in the window; "
          f"batch {BATCH}, claimed plain {plain_rows}, tiered {tiered_rows}")
    print(f"  plain claim (median)  : {p * 1000:8.2f} ms")
    print(f"  tiered claim (median) : {t * 1000:8.2f} ms")
    print(f"  ratio                 : {t / p:8.2f}×")
    print(f"  tier cost per message : {overhead_us:8.1f} µs  (target <= {TARGET_OVERHEAD_US:.0f} µs: {verdict})")


def bench(url: str, label: str, pending: int, window: int, batches: int) -> None:
    """Time the claims on a freshly migrated database."""
    started = time.perf_counter()
    tenant_id, campaign_id, account = asyncio.run(_setup(url, pending, window))
    print(f"[{label}] loaded in {time.perf_counter() - started:.1f} s")
    _report(label, pending, window, *asyncio.run(_time_claims(url, tenant_id, campaign_id, account, batches)))


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--pending", type=int, default=20_000)
    parser.add_argument("--window", type=int, default=TIER - 1_000)
    parser.add_argument("--batches", type=int, default=20)
    parser.add_argument("--db", choices=("sqlite", "postgres", "both"), default="both")
    args = parser.parse_args()
    if args.db in ("sqlite", "both"):
        with tempfile.TemporaryDirectory(prefix="clarion-bench-") as tmp:
            bench(migrated_sqlite(Path(tmp) / "clarion.db"), "sqlite", args.pending, args.window, args.batches)
    if args.db in ("postgres", "both"):
        with postgres_database() as (url, _):
            bench(url, "postgres", args.pending, args.window, args.batches)


if __name__ == "__main__":
    main()
