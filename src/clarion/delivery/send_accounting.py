"""What a campaign may still send through its channel account: the account's messaging-limit tier, the
campaign's budget and daily limit. The claim enforces them (campaign.claims.claim_due, given the resolver made
here); `send_limits` reports them for one campaign.

A messaging-limit tier (WhatsApp: 250, 2,000, 10,000, 100,000 or unlimited) caps the distinct people a business
number may message in any rolling 24 hours, across every campaign sending through it. The provider's config
carries it as `messaging_limit_tier`; a config without one has no such cap.
"""

from __future__ import annotations

import logging
import uuid
from pathlib import Path
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from clarion.campaign import send_quotas as quotas
from clarion.campaign import service as campaigns
from clarion.db import Database
from clarion.delivery import channel_service
from clarion.delivery.channels.base import OutgoingMessage, TextPayload
from clarion.delivery.sending_schemas import SendLimits
from clarion.errors import ClarionError
from clarion.kit.clock import clock, utcnow
from clarion.kit.sms import sms_segments

logger = logging.getLogger("clarion.delivery.send_accounting")


def messaging_tier(config: Any) -> int | None:
    """The distinct recipients per rolling 24 hours a provider config allows; None: "unlimited", or a provider
    without tiers."""
    tier = getattr(config, "messaging_limit_tier", None)
    return tier if isinstance(tier, int) and not isinstance(tier, bool) else None


def send_account(resolved: channel_service.ResolvedChannel) -> quotas.SendAccount:
    return quotas.SendAccount(channel_config_id=resolved.channel_config_id,
                              cost_per_message=resolved.cost_per_message,
                              unique_recipients_per_window=messaging_tier(resolved.config),
                              rate_per_second=resolved.rate_limit_per_second)


def account_resolver(*, secret: str, data_dir: Path) -> quotas.AccountResolver:
    """For claim_due: the account a campaign sends through, resolved as the dispatcher will resolve it. An
    account that cannot be resolved gives None; the dispatcher then holds the campaign with the reason."""

    async def resolve(session: AsyncSession, tenant_id: uuid.UUID, channel: str,
                      channel_config_id: uuid.UUID | None) -> quotas.SendAccount | None:
        try:
            resolved = await channel_service.resolve_channel(session, tenant_id, channel, channel_config_id,
                                                             secret=secret, data_dir=data_dir)
        except (ClarionError, ValueError):
            return None
        return send_account(resolved)

    return resolve


def estimated_units(message: OutgoingMessage) -> int:
    """The billable units a message will cost before the provider says: an SMS's segments, else one."""
    if message.channel == "sms" and isinstance(message.payload, TextPayload):
        return sms_segments(message.payload.text)[0]
    return 1


class BudgetGuard:
    """Check 2 of campaign.send_quotas, for one campaign's batch in one worker: each chunk is priced before it goes
    out and only what the budget still pays for is sent; the rest of the batch is handed back and the campaign
    paused. Chunks of a batch go out one after the other, each after the previous one was recorded, so every
    reading of the budget includes what this worker spent so far."""

    def __init__(self, database: Database, *, tenant_id: uuid.UUID, campaign_id: uuid.UUID, unit_cost: int,
                 lease_owner: str) -> None:
        self.db = database
        self.tenant_id, self.campaign_id = tenant_id, campaign_id
        self.unit_cost = unit_cost
        self.lease_owner = lease_owner
        self.exhausted = False

    @classmethod
    def of(cls, database: Database, campaign: Any, resolved: channel_service.ResolvedChannel,
           lease_owner: str) -> BudgetGuard | None:
        """A guard for a campaign with a budget on a paid account; None when there is nothing to guard."""
        if campaign.budget is None or resolved.cost_per_message <= 0:
            return None
        return cls(database, tenant_id=campaign.tenant_id, campaign_id=campaign.id,
                   unit_cost=resolved.cost_per_message, lease_owner=lease_owner)

    async def admit(self, messages: list[OutgoingMessage]) -> list[OutgoingMessage]:
        """The leading messages the budget pays for; the others are handed back unsent."""
        admitted: list[OutgoingMessage] = []
        reason = None
        if not self.exhausted:
            async with self.db.transaction() as session:
                position = await quotas.budget_left(session, self.campaign_id, unit_cost=self.unit_cost,
                                                    lease_owner=self.lease_owner)
            if position is None:  # the budget was removed meanwhile
                return messages
            left, spent, budget = position
            for message in messages:
                cost = self.unit_cost * estimated_units(message)
                if cost > left:
                    self.exhausted = True
                    reason = quotas.budget_reason(spent, budget, cost)
                    break
                admitted.append(message)
                left -= cost
        withheld = [int(m.ref) for m in messages[len(admitted):]]
        if withheld:
            logger.info("dispatch: campaign %s is out of budget; %d message(s) held back", self.campaign_id,
                        len(withheld))
            async with self.db.transaction() as session:
                await quotas.hold_back(session, self.tenant_id, self.campaign_id, withheld,
                                       lease_owner=self.lease_owner, now=utcnow(),
                                       reason=reason or "budget reached")
        return admitted


def _smallest(*limits: int | None) -> int | None:
    given = [limit for limit in limits if limit is not None]
    return min(given) if given else None


async def send_limits(session: AsyncSession, tenant_id: uuid.UUID, campaign_id: uuid.UUID, *, secret: str,
                      data_dir: Path) -> SendLimits:
    """The limits the claim applies to this campaign right now. A channel account that cannot be resolved is a
    409 naming why (the campaign could not send either)."""
    campaign = await campaigns.get_campaign(session, tenant_id, campaign_id)
    resolved = await channel_service.resolve_channel(session, tenant_id, campaign.channel, campaign.channel_config_id,
                                                     secret=secret, data_dir=data_dir)
    account = send_account(resolved)
    now, today = clock.now(), clock.today()
    tier = account.unique_recipients_per_window
    tier_used = await quotas.account_recipients_used(session, account, now=now)
    tier_left = None if tier is None or tier_used is None else max(0, tier - tier_used)
    sent_today = quotas.sent_today(campaign, today)
    daily_left = quotas.daily_left(campaign, today)
    budget_left = None
    if campaign.budget is not None and account.cost_per_message > 0:
        budget_left = max(0, (campaign.budget - campaign.spent) // account.cost_per_message)
    return SendLimits(
        campaign_id=campaign.id, channel_config_id=account.channel_config_id, provider=resolved.provider,
        daily_send_limit=campaign.daily_send_limit, sent_today=sent_today,
        messaging_limit_tier=tier, tier_recipients_used=tier_used, tier_recipients_left=tier_left,
        effective_daily_limit=_smallest(campaign.daily_send_limit, tier_left),
        budget=campaign.budget, spent=campaign.spent, cost_per_message=account.cost_per_message,
        currency=campaign.currency, budget_messages_left=budget_left,
        can_send_now=_smallest(daily_left, tier_left, budget_left),
    )
