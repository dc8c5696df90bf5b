"""Claims: which due recipients a worker leases next, across campaigns, channel accounts and tenants.

Each channel account with due recipients gets its share of a batch (campaigns of one account by priority), within
every campaign's daily limit and budget and every account's messaging-limit tier and throughput; recipients no
longer reachable on the channel are skipped on the way. The counterpart of campaign.sending (outcomes, events):
the dispatcher claims here, commits, sends, then records there. Works across tenants. Flushes, never commits.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from clarion.campaign import claims_repository as repo
from clarion.campaign import planning, sending_repository
from clarion.campaign import send_quotas as quotas


@dataclass(frozen=True)
class ClaimedRecipient:
    id: int
    tenant_id: uuid.UUID
    campaign_id: uuid.UUID
    contact_id: uuid.UUID
    channel: str
    email: str | None
    phone: str | None
    attempt: int


@dataclass
class _Account:
    """A channel account's part of one claim: its due campaigns, highest priority first, and how many more it
    may claim in this batch (what its throughput sends in quotas.BATCH_SECONDS; None: no limit)."""

    campaigns: list[_Claimant] = field(default_factory=list)
    room: int | None = None


@dataclass
class _Claimant:
    """A due campaign in one claim: the daily quota it has left (None: no daily limit), and whether it may have
    more due recipients than it was given so far."""

    campaign: repo.DueCampaign
    account: quotas.SendAccount | None
    through: _Account
    daily_left: int | None
    more: bool = True


@dataclass(frozen=True)
class _Lease:
    now: datetime
    owner: str
    until: datetime


def _account_key(campaign: repo.DueCampaign, account: quotas.SendAccount | None) -> tuple[Any, ...]:
    """What campaigns share when they share a channel account: its id, else the tenant's default of the channel
    (the built-in outbox) — or, unresolved, what the campaign names."""
    if account is not None and account.channel_config_id is not None:
        return ("account", account.channel_config_id)
    return (campaign.tenant_id, campaign.channel, campaign.channel_config_id)


async def claim_due(session: AsyncSession, *, now: datetime, limit: int, lease_owner: str, lease_seconds: int,
                    campaign_id: uuid.UUID | None = None, tenant_id: uuid.UUID | None = None,
                    account_of: quotas.AccountResolver | None = None) -> list[ClaimedRecipient]:
    """Lease up to `limit` due recipients of running campaigns (of one campaign or tenant, or of all).

    Each channel account with due recipients first gets an equal share of the batch, taken by its campaigns
    highest priority first; what the accounts leave of their shares then goes to the campaigns that may have
    more, highest priority first. Priority so orders the campaigns that compete for one account, while a
    high-priority campaign whose account cannot send now (a failing provider, a slow throttle) never fills the
    batch and starves the campaigns of other accounts and channels. Each campaign's claim is one set-based
    statement, made at most twice per batch.

    Due recipients whose contact is no longer reachable on the channel are marked `skipped` on the way. The
    caller commits before sending, so the lease is visible to every other worker.

    With `account_of`, each campaign's claim also stays within its channel account's limits: the campaign's
    budget (a campaign that cannot pay for one more message is paused with the reason), the account's
    messaging-limit tier (never more new recipients than the tier leaves in the rolling window) and its
    throughput (SendAccount.batch_room); the claimed rows record the account.
    """
    claimants: list[_Claimant] = []
    accounts: dict[tuple[Any, ...], _Account] = {}
    resolved: dict[tuple[Any, ...], quotas.SendAccount | None] = {}
    for campaign in await repo.campaigns_with_due_recipients(session, now=now, campaign_id=campaign_id,
                                                             tenant_id=tenant_id):
        # In local time each recipient's send_after already holds its own window; otherwise the UTC window
        # must be open now (leftovers from an earlier day wait for the next opening).
        if not campaign.local_time and not planning.SendWindow.of(campaign).is_open(now):
            continue
        daily_left = quotas.daily_left(campaign, now.date())
        if daily_left == 0:
            continue
        account = None
        if account_of is not None:
            named = (campaign.tenant_id, campaign.channel, campaign.channel_config_id)
            if named not in resolved:  # campaigns of one account resolve it once
                resolved[named] = await account_of(session, *named)
            account = resolved[named]
        key = _account_key(campaign, account)
        if key not in accounts:
            accounts[key] = _Account(room=account.batch_room() if account is not None else None)
        claimants.append(_Claimant(campaign, account, accounts[key], daily_left))
        accounts[key].campaigns.append(claimants[-1])

    claimed: list[ClaimedRecipient] = []
    lease = _Lease(now, lease_owner, now + timedelta(seconds=lease_seconds))
    share = -(-limit // max(1, len(accounts)))
    for through in accounts.values():
        left = share
        for claimant in through.campaigns:
            rows = await _claim_campaign(session, claimant, min(left, limit - len(claimed)), lease)
            claimed += rows
            left -= len(rows)
    for claimant in claimants:
        if claimant.more and len(claimed) < limit:
            claimed += await _claim_campaign(session, claimant, limit - len(claimed), lease)
    return claimed


async def _claim_campaign(session: AsyncSession, claimant: _Claimant, room: int,
                          lease: _Lease) -> list[ClaimedRecipient]:
    """Up to `room` due recipients of one campaign, within its daily quota and budget, and its account's tier
    and throughput."""
    if room <= 0:
        return []  # its account's share, or the batch, is full: it may still have more
    campaign, now = claimant.campaign, lease.now
    room = min([room, *(left for left in (claimant.daily_left, claimant.through.room) if left is not None)])
    through = None
    if claimant.account is not None and room > 0:
        room = await quotas.room_within_budget(session, campaign, claimant.account, room)
        if room > 0:
            through = await quotas.claim_account(session, claimant.account, now=now)
    if room <= 0:
        claimant.more = False
        return []
    await _skip_unreachable(session, campaign, now=now, limit=room)
    rows = await repo.claim(session, campaign, now=now, limit=room, lease_owner=lease.owner,
                            lease_until=lease.until, account=through)
    if through is not None:
        await quotas.record_claims(session, through, rows, now=now)
    if rows and campaign.daily_send_limit:
        await repo.use_daily_quota(session, campaign.id, today=now.date(), used=len(rows))
    if claimant.daily_left is not None:
        claimant.daily_left -= len(rows)
    if claimant.through.room is not None:
        claimant.through.room -= len(rows)
    # Fewer than asked: nothing more is due, or the tier leaves no more, until the next batch.
    claimant.more = len(rows) == room
    return [ClaimedRecipient(id=r.id, tenant_id=r.tenant_id, campaign_id=r.campaign_id, contact_id=r.contact_id,
                             channel=campaign.channel, email=r.email, phone=r.phone, attempt=r.retry_count + 1)
            for r in rows]


async def _skip_unreachable(session: AsyncSession, campaign: repo.DueCampaign, *, now: datetime,
                            limit: int) -> None:
    skipped = await repo.skip_unreachable(session, campaign, now=now, limit=limit)
    if not skipped:
        return
    await sending_repository.add_counters(session, campaign.id, skipped=len(skipped), pending=-len(skipped))
    await sending_repository.insert_events(session, [
        sending_repository.event_row(r.tenant_id, r.campaign_id, r.id, r.contact_id, "skipped", now,
                                     {"reason": f"not reachable on {campaign.channel}"})
        for r in skipped])


async def release_expired_leases(session: AsyncSession, *, now: datetime) -> int:
    """Crash recovery: `sending` rows whose lease ran out go back to `pending` (and are claimed again)."""
    return await repo.release_expired(session, now=now)
