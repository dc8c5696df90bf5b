"""What a campaign may still send beyond its daily limit: its budget, and its channel account's messaging-limit tier.

Budget — `spent` grows by the channel account's cost_per_message × each message's billable units (SMS
segments) as outcomes are recorded. Three checks keep it within `budget`:

1. the claim takes no more recipients than the remaining budget pays for, a message estimated at the campaign's
   own average so far (spent / sent) and never below one billable unit; recipients any worker holds in flight
   count as spent, and the claims of one campaign are serialised;
2. before each chunk goes out, the dispatcher prices its messages exactly as far as it can (an SMS's segments)
   against a fresh reading of the budget (budget_left), and hands back unsent, with the campaign paused, what
   it cannot pay for (hold_back);
3. when recorded outcomes bring spent to the budget, the campaign pauses (campaign.sending).

A paused campaign says why in status_reason; raising the budget and resuming it goes on. Other workers' messages
in flight are estimated, not priced, so with several workers on one campaign the last chunk can still miss by
the difference; a provider that bills more units than the estimate (Twilio's encoding choices) likewise.

Tier — an account with a messaging-limit tier (WhatsApp) may message that many distinct people in any rolling
24 hours, across every campaign sending through it. Each claim through the account records whom it reaches, and
when, in account_reach (one row per account and contact); the next claim counts the people reached in the last
24 hours there (a range of one index) and never claims more new people than the tier leaves, while people
already reached in the window use up nothing. The window that ends now starts just after now − 24 h: a person
reached at T holds a slot until exactly T + 24 h, and the count, the claim and send-limits all judge it so
(window_start), so a daily run at the same clock time finds yesterday's slots free. Claims through one tiered
account are serialised, so two workers never spend the same room. A claimed message that then fails for good
still counts until the window passes it: the tier may go under-used by the failures, never over. (Counting the
sent recipients themselves — a DISTINCT over every recipient sent in the window — cost 0.45–0.8 ms per claimed
message at the 100,000 tier: bench claim_quotas.)
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from clarion.campaign import claims_repository as repo
from clarion.campaign import service

# The rolling window of a messaging-limit tier.
TIER_WINDOW = timedelta(hours=24)
# How long sending one account's part of a batch may take at the account's throughput.
BATCH_SECONDS = 10


def window_start(now: datetime) -> datetime:
    """Where the tier's window that ends now starts, exclusive: the window is (now - TIER_WINDOW, now], so a
    person reached at T holds a slot until exactly T + 24 h ("a rolling 24-hour period", Meta) and a daily cron
    at the same clock time finds yesterday's slots free again."""
    return now - TIER_WINDOW


@dataclass(frozen=True)
class SendAccount:
    """What the claim needs of the channel account a campaign sends through; the delivery domain resolves it
    and hands claim_due an AccountResolver."""

    channel_config_id: uuid.UUID | None
    cost_per_message: int = 0  # minor units, per billable unit
    # Distinct recipients the account may message in any rolling TIER_WINDOW, shared by every campaign that sends
    # through it (WhatsApp's messaging-limit tier); None: no such cap.
    unique_recipients_per_window: int | None = None
    # Messages per second across all workers (the dispatcher's shared throttle); None: no limit.
    rate_per_second: float | None = None

    def batch_room(self) -> int | None:
        """The most one batch may claim through the account: what its throughput sends in BATCH_SECONDS, so a
        slow account (a long code's 1/s) neither outlives the lease nor keeps the worker from the other
        accounts' share for long. None: no limit."""
        if self.rate_per_second is None or self.rate_per_second <= 0:
            return None
        return max(1, int(self.rate_per_second * BATCH_SECONDS))


# (session, tenant id, channel, the campaign's channel_config_id) → the account, or None when it cannot be
# resolved (the dispatcher then holds the campaign with the reason).
AccountResolver = Callable[[AsyncSession, uuid.UUID, str, uuid.UUID | None], Awaitable[SendAccount | None]]


def sent_today(campaign: Any, today: date) -> int:
    """What a campaign (a model or a repo.DueCampaign) sent against its daily limit today: the count restarts on a
    new day."""
    return campaign.daily_sent_count if campaign.daily_sent_date == today else 0


def daily_left(campaign: Any, today: date) -> int | None:
    """What the campaign's daily limit leaves for today; None: no daily limit."""
    if not campaign.daily_send_limit:
        return None
    return max(0, campaign.daily_send_limit - sent_today(campaign, today))


def budget_reason(spent: int, budget: int, next_cost: int | None = None) -> str:
    reason = f"budget reached: spent {spent} of the budget of {budget} (minor units)"
    return reason + (f"; the next message would cost {next_cost}" if next_cost is not None else "")


async def pause_running(session: AsyncSession, tenant_id: uuid.UUID, campaign_id: uuid.UUID, reason: str) -> None:
    """Pause the campaign with the reason if it is still running (another writer may have moved it already)."""
    campaign = await service.get_campaign(session, tenant_id, campaign_id, for_update=True)
    if campaign.status == "running":
        await service.transition(session, tenant_id, campaign_id, "pause", reason=reason)


def _per_message(unit_cost: int, spent: int, sent: int) -> int:
    """A message's estimated cost: the campaign's average so far, at least one billable unit."""
    return max(unit_cost, -(-spent // sent) if sent else 0)


async def room_within_budget(session: AsyncSession, campaign: repo.DueCampaign, account: SendAccount,
                             room: int) -> int:
    """How many of `room` recipients the campaign's remaining budget pays for (check 1 above); a campaign that
    cannot pay for one more message, with nothing in flight, is paused."""
    if campaign.budget is None or account.cost_per_message <= 0:
        return room
    await repo.lock_quota(session, f"budget:{campaign.id}")
    budget, spent, sent, in_flight = await repo.budget_position(session, campaign.id)
    if budget is None:
        return room
    per_message = _per_message(account.cost_per_message, spent, sent)
    affordable = (budget - spent) // per_message - in_flight
    if affordable <= 0 and in_flight == 0:
        await pause_running(session, campaign.tenant_id, campaign.id, budget_reason(spent, budget, per_message))
    return max(0, min(room, affordable))


async def budget_left(session: AsyncSession, campaign_id: uuid.UUID, *, unit_cost: int,
                      lease_owner: str) -> tuple[int, int, int] | None:
    """(money left for the messages `lease_owner` holds, spent, budget): the budget less what is spent and what
    the other workers' claimed messages are estimated to cost. None when the campaign has no budget."""
    budget, spent, sent, others = await repo.budget_position(session, campaign_id, excluding_lease=lease_owner)
    if budget is None:
        return None
    return budget - spent - others * _per_message(unit_cost, spent, sent), spent, budget


async def hold_back(session: AsyncSession, tenant_id: uuid.UUID, campaign_id: uuid.UUID, recipient_ids: list[int],
                    *, lease_owner: str, now: datetime, reason: str) -> None:
    """Hand claimed recipients back unsent (pending again, no attempt counted) and pause the campaign."""
    await repo.release_held(session, recipient_ids, lease_owner=lease_owner, now=now)
    await pause_running(session, tenant_id, campaign_id, reason)


async def account_recipients_used(session: AsyncSession, account: SendAccount, *, now: datetime) -> int | None:
    """Distinct recipients a tiered account reached in the window that ends now (claims in flight included);
    None: the account has no tier."""
    if account.unique_recipients_per_window is None or account.channel_config_id is None:
        return None
    return await repo.recipients_in_window(session, account.channel_config_id, after=window_start(now))


async def record_claims(session: AsyncSession, through: repo.AccountQuota, rows: list[repo.ClaimedRow], *,
                        now: datetime) -> None:
    """A claim through a tiered account reaches its contacts now."""
    if through.new_recipients is not None and through.channel_config_id is not None:
        await repo.record_reach(session, through.channel_config_id, rows, at=now)


async def claim_account(session: AsyncSession, account: SendAccount, *, now: datetime) -> repo.AccountQuota:
    """The account a claim goes through, with the new recipients its tier leaves."""
    tier = account.unique_recipients_per_window
    if tier is None or account.channel_config_id is None:
        return repo.AccountQuota(account.channel_config_id)
    await repo.lock_quota(session, f"tier:{account.channel_config_id}")
    after = window_start(now)
    used = await repo.recipients_in_window(session, account.channel_config_id, after=after)
    return repo.AccountQuota(account.channel_config_id, new_recipients=max(0, tier - used), after=after)
