"""The queries of claims: which due recipients a worker leases, within daily limits, budgets and channel
accounts' messaging-limit tiers (campaign.claims, campaign.send_quotas), and the leases handed back.

UNSCOPED, like sending_repository: workers act across all tenants, naming rows by id; each row they touch carries
its tenant_id, which they pass on. Nothing here takes a tenant from a request.

Claims are one UPDATE … RETURNING per campaign. On PostgreSQL the rows are chosen by a sub-select with
FOR UPDATE OF campaign_recipients SKIP LOCKED, so concurrent workers take different rows and never wait on
each other; on SQLite the single statement runs under the database's write lock, which serialises claimers.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any

from sqlalchemy import Select, and_, case, exists, func, not_, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from clarion.audience import service as audience
from clarion.campaign.sending_repository import (
    NO_SYNC,
    R,
    of_tenant,
    recipient_id_in,
    skip_locked,
    take_write_lock,
)
from clarion.kit.repository import dialect, dialect_insert
from clarion.models import AccountReach, Campaign, Contact

# Which contact column must still hold an address for a channel to reach the contact.
# Telegram goes to the chat the contact has now (it may re-link), so recipients keep no snapshot of it; push
# goes to the contact's browser subscriptions, of which it needs at least one.
_CONTACT_ADDRESS = {"email": Contact.email, "sms": Contact.phone, "whatsapp": Contact.phone,
                    "telegram": Contact.telegram_chat_id}
_RECIPIENT_ADDRESS = {"email": R.email, "sms": R.phone, "whatsapp": R.phone}


@dataclass(frozen=True)
class DueCampaign:
    id: uuid.UUID
    tenant_id: uuid.UUID
    channel: str
    priority: int
    daily_send_limit: int | None
    daily_sent_date: date | None
    daily_sent_count: int
    send_window: dict[str, Any] | None
    local_time: bool
    channel_config_id: uuid.UUID | None = None
    budget: int | None = None


@dataclass(frozen=True)
class AccountQuota:
    """A claim through a channel account: the account is recorded on the claimed rows; with `new_recipients`,
    at most that many of them may be contacts the account has not messaged after `after` (the others use up
    nothing of the account's quota)."""

    channel_config_id: uuid.UUID | None
    new_recipients: int | None = None
    after: datetime | None = None


@dataclass(frozen=True)
class ClaimedRow:
    id: int
    tenant_id: uuid.UUID
    campaign_id: uuid.UUID
    contact_id: uuid.UUID
    email: str | None
    phone: str | None
    retry_count: int


def _due(now: datetime) -> Any:
    return and_(R.status == "pending", R.send_after.is_not(None), R.send_after <= now)


def reachable(channel: str) -> Any:
    """SQL condition on a recipient row: its contact is still subscribed on `channel` and has the address."""
    contact_ok = select(Contact.id).where(Contact.id == R.contact_id, audience.subscribed_on(channel))
    if channel in _CONTACT_ADDRESS:
        contact_ok = contact_ok.where(_CONTACT_ADDRESS[channel].is_not(None))
    elif channel == "push":
        contact_ok = contact_ok.where(audience.has_push_subscription())
    condition = exists(contact_ok)
    if channel in _RECIPIENT_ADDRESS:
        condition = and_(condition, _RECIPIENT_ADDRESS[channel].is_not(None))
    return condition


async def campaigns_with_due_recipients(session: AsyncSession, *, now: datetime, campaign_id: uuid.UUID | None,
                                        tenant_id: uuid.UUID | None = None) -> list[DueCampaign]:
    """Running campaigns (of one tenant, or of all) that have a due pending recipient, highest priority first
    (then oldest)."""
    stmt = (select(Campaign.id, Campaign.tenant_id, Campaign.channel, Campaign.priority, Campaign.daily_send_limit,
                   Campaign.daily_sent_date, Campaign.daily_sent_count, Campaign.send_window, Campaign.local_time,
                   Campaign.channel_config_id, Campaign.budget)
            .where(Campaign.status == "running",
                   exists(select(R.id).where(R.campaign_id == Campaign.id, _due(now))))
            .order_by(Campaign.priority.desc(), Campaign.id))
    if campaign_id is not None:
        stmt = stmt.where(Campaign.id == campaign_id)
    return [DueCampaign(*row) for row in (await session.execute(of_tenant(stmt, tenant_id))).all()]


async def skip_unreachable(session: AsyncSession, campaign: DueCampaign, *, now: datetime,
                           limit: int) -> list[ClaimedRow]:
    """Mark up to `limit` due recipients `skipped` whose contact can no longer be reached on the channel."""
    channel = campaign.channel
    chosen = (select(R.id).where(R.campaign_id == campaign.id, _due(now), not_(reachable(channel)))
              .order_by(R.id).limit(limit))
    still_subscribed = exists(select(Contact.id).where(Contact.id == R.contact_id, audience.subscribed_on(channel)))
    reason = case((still_subscribed, f"no {channel} address"), else_=f"no longer subscribed to {channel}")
    stmt = (update(R).where(R.id.in_(skip_locked(session, chosen).scalar_subquery()))
            .values(status="skipped", failure_reason=reason, updated_at=now)
            .returning(R.id, R.tenant_id, R.campaign_id, R.contact_id, R.email, R.phone, R.retry_count))
    return [ClaimedRow(*row) for row in (await session.execute(stmt, execution_options=NO_SYNC)).all()]


async def claim(session: AsyncSession, campaign: DueCampaign, *, now: datetime, limit: int, lease_owner: str,
                lease_until: datetime, account: AccountQuota | None = None) -> list[ClaimedRow]:
    """Lease up to `limit` due, reachable recipients of one campaign (status → sending), lowest id first; through
    `account`, recorded on the rows and within its quota of new recipients."""
    chosen = (select(R.id).where(R.campaign_id == campaign.id, _due(now), reachable(campaign.channel))
              .order_by(R.id).limit(limit))
    chosen = skip_locked(session, chosen)
    values: dict[str, Any] = {"status": "sending", "lease_owner": lease_owner, "lease_expires_at": lease_until,
                              "updated_at": now}
    if account is not None:
        values["channel_config_id"] = account.channel_config_id
        if account.new_recipients is not None and account.after is not None:
            chosen = _within_quota(chosen, account.channel_config_id, account.after, account.new_recipients)
    stmt = (update(R).where(R.id.in_(chosen.scalar_subquery())).values(**values)
            .returning(R.id, R.tenant_id, R.campaign_id, R.contact_id, R.email, R.phone, R.retry_count))
    rows = [ClaimedRow(*row) for row in (await session.execute(stmt, execution_options=NO_SYNC)).all()]
    rows.sort(key=lambda r: r.id)  # RETURNING order is unspecified
    return rows


def _in_window(last_messaged_at: Any, after: datetime) -> Any:
    """A contact last messaged at `last_messaged_at` still holds a slot of the window that starts at `after`:
    the window is (after, now], so a contact reached at T frees its slot at exactly T + the window. The count
    and the claim both use this one condition."""
    return last_messaged_at > after


def _reached(channel_config_id: uuid.UUID | None, after: datetime) -> Any:
    return and_(AccountReach.channel_config_id == channel_config_id,
                _in_window(AccountReach.last_messaged_at, after))


def _within_quota(candidates: Select[Any], channel_config_id: uuid.UUID | None, after: datetime,
                  new_recipients: int) -> Select[Any]:
    """Of the candidate ids (locked, in id order), those whose contact the account reached after `after` (one
    primary-key probe each) and the first `new_recipients` of the others. Contacts stand for phone numbers: an
    account is one tenant's, and a tenant's contacts have distinct numbers (channels without numbers work the
    same)."""
    locked = candidates.add_columns(R.contact_id).subquery()
    # A scalar subquery, not EXISTS: PostgreSQL turns an EXISTS into a hash of the whole window (100,000 rows
    # at the top tier) where a few hundred key probes do.
    last = (select(AccountReach.last_messaged_at)
            .where(AccountReach.channel_config_id == channel_config_id,
                   AccountReach.contact_id == locked.c.contact_id)
            .scalar_subquery())
    flagged = select(locked.c.id, case((_in_window(last, after), 1), else_=0).label("free")).subquery()
    ranked = select(flagged.c.id, flagged.c.free,
                    func.row_number().over(partition_by=flagged.c.free, order_by=flagged.c.id).label("n")).subquery()
    return select(ranked.c.id).where(or_(ranked.c.free == 1, ranked.c.n <= new_recipients))


async def recipients_in_window(session: AsyncSession, channel_config_id: uuid.UUID, *, after: datetime) -> int:
    """Distinct contacts the account reached (claimed for it) after `after`: a range of one index."""
    stmt = select(func.count()).select_from(AccountReach).where(_reached(channel_config_id, after))
    return int((await session.execute(stmt)).scalar_one())


async def record_reach(session: AsyncSession, channel_config_id: uuid.UUID, rows: list[ClaimedRow], *,
                       at: datetime) -> None:
    """The account reaches the claimed rows' contacts at `at` (one upsert; a contact already there moves on)."""
    if not rows:
        return
    stmt = dialect_insert(session, AccountReach.__table__)
    stmt = stmt.on_conflict_do_update(index_elements=["channel_config_id", "contact_id"],
                                      set_={"last_messaged_at": stmt.excluded.last_messaged_at})
    # executemany: compiled once and cached; the drivers batch the rows (insertmanyvalues on PostgreSQL).
    await session.execute(stmt, [{"tenant_id": r.tenant_id, "channel_config_id": channel_config_id,
                                  "contact_id": r.contact_id, "last_messaged_at": at} for r in rows])


async def lock_quota(session: AsyncSession, key: str) -> None:
    """Serialise, until the transaction ends, the claims that share one quota (an account's messaging tier, a
    campaign's budget), so a count and the claim that follows it are never both made by two workers at once:
    a transaction-scoped advisory lock on PostgreSQL, the database's write lock on SQLite."""
    if dialect(session) == "postgresql":
        await session.execute(select(func.pg_advisory_xact_lock(func.hashtextextended(key, 0))))
    else:
        await take_write_lock(session)


async def budget_position(session: AsyncSession, campaign_id: uuid.UUID, *,
                          excluding_lease: str | None = None) -> tuple[int | None, int, int, int]:
    """(budget, spent, sent, recipients in flight — but those of `excluding_lease`) of one campaign, read in one
    statement so a concurrent outcome (sending → sent, spent += cost in one commit) is seen wholly or not at all."""
    flying = select(func.count()).select_from(R).where(R.campaign_id == campaign_id, R.status == "sending")
    if excluding_lease is not None:
        flying = flying.where(R.lease_owner != excluding_lease)
    in_flight = flying.scalar_subquery()
    stmt = select(Campaign.budget, Campaign.spent, Campaign.sent, in_flight).where(Campaign.id == campaign_id)
    budget, spent, sent, flying = (await session.execute(stmt)).one()
    return budget, int(spent), int(sent), int(flying)


async def use_daily_quota(session: AsyncSession, campaign_id: uuid.UUID, *, today: date, used: int) -> None:
    """Count `used` sends against today's quota (the count restarts on a new day)."""
    stmt = (update(Campaign).where(Campaign.id == campaign_id)
            .values(daily_sent_count=case((Campaign.daily_sent_date == today, Campaign.daily_sent_count),
                                          else_=0) + used,
                    daily_sent_date=today))
    await session.execute(stmt, execution_options=NO_SYNC)


async def release_held(session: AsyncSession, ids: list[int], *, lease_owner: str, now: datetime) -> int:
    """Hand recipients still `sending` under `lease_owner` back to `pending`, unsent and no attempt counted."""
    if not ids:
        return 0
    stmt = (update(R).where(recipient_id_in(session, ids), R.status == "sending", R.lease_owner == lease_owner)
            .values(status="pending", lease_owner=None, lease_expires_at=None, updated_at=now))
    return int((await session.execute(stmt, execution_options=NO_SYNC)).rowcount or 0)


async def release_expired(session: AsyncSession, *, now: datetime) -> int:
    expired = select(R.id).where(R.status == "sending", R.lease_expires_at < now)
    stmt = (update(R).where(R.id.in_(skip_locked(session, expired).scalar_subquery()))
            .values(status="pending", lease_owner=None, lease_expires_at=None, updated_at=now))
    return int((await session.execute(stmt, execution_options=NO_SYNC)).rowcount or 0)
