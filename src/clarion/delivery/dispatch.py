"""The dispatcher: claims due recipients, makes their messages, sends them through the channel, records outcomes.

One batch, in order, and never a database transaction open while a provider is talked to (SQLite has one
writer, and a PostgreSQL row lock held across an SMTP conversation would stall every other worker):

1. claim (campaign.claims.claim_due) — short transaction, committed: the rows are `sending` under our lease;
2. per campaign: load campaign, template, contacts and channel account — a read transaction;
3. render each message (content.rendering), register the batch's links — one short write transaction —,
   rewrite links, add the open pixel, build the RFC 5322 bytes (compose.py);
4. send in chunks through the channel's provider (cached across batches, SMTP pools stay open), paced by the
   account's shared throughput limit (throttle.py); each chunk's outcomes are recorded in a short transaction
   of their own (campaign.sending.record_outcomes) while the next chunk goes out, in the order sent, so a crash
   re-sends at most two chunks.

A crash anywhere leaves rows `sending`; their lease runs out and release_expired_leases hands them back. That
makes delivery at-least-once: the chunks in flight when a worker dies are sent again by another.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import json
import logging
import os
import secrets
import socket
import time
import uuid
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

from clarion.audience import service as audience
from clarion.campaign import claims, sending
from clarion.campaign import service as campaigns
from clarion.config import Settings
from clarion.content import service as content
from clarion.db import Database
from clarion.delivery import channel_service, compose, send_accounting
from clarion.delivery.channels.base import ChannelProvider, OutgoingMessage, ProviderContext, SendResult
from clarion.delivery.outbox_service import DatabaseOutboxIndex
from clarion.delivery.throttle import Throttle
from clarion.errors import ClarionError
from clarion.kit.clock import utcnow
from clarion.kit.interpreter import rarer_young_collections

logger = logging.getLogger("clarion.delivery.dispatch")


class DispatchSettings(BaseSettings):
    """Tuning of the send pipeline (CLARION_DISPATCH_* environment variables)."""

    model_config = SettingsConfigDict(env_prefix="CLARION_DISPATCH_", extra="ignore")

    # Recipients claimed at once (across campaigns). Between two batches the channel idles (the last chunk is
    # recorded, the next batch claimed, loaded and its first chunk rendered): 500 at a time lost ~7% of the
    # throughput of bench/send_pipeline.py to that, 2,000 ~2%. A slow account's share is bounded anyway by what
    # it sends in 10 s (campaign.claims).
    batch_size: int = 2000
    # Messages handed to the provider per call; a chunk's outcomes are committed while the next one goes out.
    # The crash window (messages sent but not yet recorded) is at most two chunks per worker.
    chunk_size: int = 100
    # A claim must outlive rendering and sending its batch; an expired one is handed to another worker.
    lease_seconds: float = 300.0
    # With nothing due, look again after this long.
    idle_seconds: float = 1.0
    # How often each worker hands back the expired leases of crashed workers.
    reap_seconds: float = 10.0


@dataclass
class DispatchReport:
    claimed: int = 0
    sent: int = 0
    failed: int = 0  # not sent this time: permanent failures and transient ones put back for a retry
    campaigns: set[uuid.UUID] = field(default_factory=set)

    def add(self, other: DispatchReport) -> None:
        self.claimed += other.claimed
        self.sent += other.sent
        self.failed += other.failed
        self.campaigns |= other.campaigns


# Messages composed between two yields to the event loop (about a millisecond of work each).
_COMPOSE_SLICE = 8


def _failure(composed: compose.Composed) -> sending.SendOutcome:
    """A recipient whose message could not be made: permanent, with the reason."""
    return sending.SendOutcome(recipient_id=composed.recipient_id, ok=False, error=composed.error)


class CampaignCannotSend(Exception):
    """Nothing of this campaign can go out until someone fixes it (no template, no channel account …)."""


def _reveal(value: Any) -> Any:
    if isinstance(value, SecretStr):
        return value.get_secret_value()
    if isinstance(value, BaseModel):
        return {name: _reveal(getattr(value, name)) for name in type(value).model_fields}
    if isinstance(value, dict):
        return {str(k): _reveal(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_reveal(v) for v in value]
    return value if isinstance(value, (str, int, float, bool, type(None))) else str(value)


def _fingerprint(resolved: channel_service.ResolvedChannel) -> str:
    """Changes whenever the account's settings (secrets included) change: the cached provider is then rebuilt."""
    data = json.dumps([resolved.provider, _reveal(resolved.config)], sort_keys=True)
    return hashlib.sha256(data.encode()).hexdigest()


def new_lease_owner() -> str:
    # Unique per process and start: a restarted worker must not mistake its predecessor's leases for its own.
    return f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(3)}"


class ProviderCache:
    """One provider per channel account, kept across batches (SMTP connections stay open); rebuilt when the
    account's settings change, closed on shutdown."""

    def __init__(self, database: Database, public_base_url: str | None = None) -> None:
        self.database = database
        self.public_base_url = public_base_url
        self._providers: dict[str, tuple[str, ChannelProvider[Any]]] = {}

    async def get(self, resolved: channel_service.ResolvedChannel) -> ChannelProvider[Any]:
        key, fingerprint = resolved.throttle_key, _fingerprint(resolved)
        cached = self._providers.get(key)
        if cached is not None and cached[0] == fingerprint:
            return cached[1]
        if cached is not None:
            await cached[1].close()
        provider = channel_service.build_provider(
            resolved,
            context=ProviderContext(
                outbox_index=DatabaseOutboxIndex(self.database), public_base_url=self.public_base_url
            ),
        )
        self._providers[key] = (fingerprint, provider)
        return provider

    async def close(self) -> None:
        providers, self._providers = self._providers, {}
        results = await asyncio.gather(*(p.close() for _, p in providers.values()), return_exceptions=True)
        for result in results:
            if isinstance(result, Exception):
                logger.warning("closing a channel provider failed: %s", result)


async def with_addresses(session: Any, campaign: Any, template: Any, message_content: compose.Content,
                         contacts: dict[uuid.UUID, dict[str, Any]], *, secret: str, data_dir: Any) -> compose.Content:
    """What a batch needs beyond the contacts' fields: push sends get each contact's browser subscriptions (into
    its payload dict), and a template naming telegram_start_url gets the tenant's bot to build deep links
    (ValueError when the tenant has none: every message would fail to render)."""
    if campaign.channel == "push" and contacts:
        for contact_id, subscriptions in (await audience.push_targets(session, campaign.tenant_id,
                                                                      list(contacts))).items():
            contacts[contact_id]["push_subscriptions"] = subscriptions
    if compose.uses_telegram_link(template):
        bot = await channel_service.telegram_bot_username(session, campaign.tenant_id, secret=secret,
                                                          data_dir=data_dir)
        if bot is None:
            raise ValueError("the template uses telegram_start_url, but no enabled Telegram channel names a "
                             "bot_username")
        message_content = dataclasses.replace(message_content, telegram_bot=bot)
    return message_content


@dataclass
class _Plan:
    """What one campaign's share of a batch needs, loaded in one read transaction."""

    campaign: Any  # campaign.sending.SendingCampaign
    content: compose.Content
    contacts: dict[uuid.UUID, dict[str, Any]]
    resolved: channel_service.ResolvedChannel
    sender: compose.Sender | None


class Dispatcher:
    """Sends due recipients. `run` is the worker's loop; `dispatch_once` / `drain` serve process-daily and tests."""

    def __init__(
        self,
        database: Database,
        settings: Settings,
        *,
        options: DispatchSettings | None = None,
        lease_owner: str | None = None,
    ) -> None:
        self.db = database
        self.settings = settings
        self.options = options or DispatchSettings()
        self.lease_owner = lease_owner or new_lease_owner()
        self.links = compose.Links(base_url=settings.base_url, secret=settings.resolved_secret_key())
        self.providers = ProviderCache(database, settings.base_url)
        # Budgets and messaging-limit tiers are checked at the claim, against the account each campaign uses.
        self.account_of = send_accounting.account_resolver(
            secret=settings.resolved_secret_key(), data_dir=settings.data_dir
        )

    async def close(self) -> None:
        await self.providers.close()

    # --- loops -------------------------------------------------------------------------------------------

    async def run(self, stop: asyncio.Event) -> None:
        """Dispatch until `stop` is set; the batch in hand is finished first. Providers are closed on the way out."""
        next_reap = 0.0
        try:
            while not stop.is_set():
                if time.monotonic() >= next_reap:
                    next_reap = time.monotonic() + self.options.reap_seconds
                    await self.release_expired()
                report = await self.dispatch_once()
                if report.claimed == 0:
                    try:
                        await asyncio.wait_for(stop.wait(), timeout=self.options.idle_seconds)
                    except TimeoutError:
                        pass
        finally:
            await self.close()

    async def release_expired(self) -> int:
        async with self.db.transaction() as session:
            released = await claims.release_expired_leases(session, now=utcnow())
        if released:
            logger.warning("dispatch: %d recipient(s) whose worker lost its lease are due again", released)
        return released

    async def drain(self, campaign_ids: list[uuid.UUID] | None = None) -> DispatchReport:
        """Dispatch batches until nothing is due (of these campaigns, or of any)."""
        total = DispatchReport()
        for campaign_id in campaign_ids if campaign_ids is not None else [None]:
            while True:
                report = await self.dispatch_once(campaign_id=campaign_id)
                total.add(report)
                if report.claimed == 0:
                    break
        return total

    # --- one batch ---------------------------------------------------------------------------------------

    async def dispatch_once(self, *, campaign_id: uuid.UUID | None = None) -> DispatchReport:
        """Claim one batch of due recipients (of one campaign, or of all) and send it."""
        with rarer_young_collections():
            return await self._dispatch_once(campaign_id)

    async def _dispatch_once(self, campaign_id: uuid.UUID | None) -> DispatchReport:
        now = utcnow()
        async with self.db.transaction() as session:
            claimed = await claims.claim_due(
                session,
                now=now,
                limit=self.options.batch_size,
                lease_owner=self.lease_owner,
                lease_seconds=int(self.options.lease_seconds),
                campaign_id=campaign_id,
                account_of=self.account_of,
            )
        report = DispatchReport(claimed=len(claimed))
        groups: dict[uuid.UUID, list[claims.ClaimedRecipient]] = defaultdict(list)
        for recipient in claimed:
            groups[recipient.campaign_id].append(recipient)
        for group_campaign_id, recipients in groups.items():
            report.campaigns.add(group_campaign_id)
            report.add(await self._send_campaign_batch(group_campaign_id, recipients))
        return report

    async def _send_campaign_batch(
        self, campaign_id: uuid.UUID, recipients: list[claims.ClaimedRecipient]
    ) -> DispatchReport:
        try:
            plan = await self._plan(campaign_id, recipients)
        except CampaignCannotSend as exc:
            return await self._hold_campaign(campaign_id, recipients, str(exc))
        campaign = plan.campaign
        triples = [
            (r.id, compose.recipient_address(campaign.channel, r.email, r.phone, plan.contacts.get(r.contact_id)),
             r.contact_id)
            for r in recipients
        ]
        report = DispatchReport()
        provider = await self.providers.get(plan.resolved)
        guard = send_accounting.BudgetGuard.of(self.db, campaign, plan.resolved, self.lease_owner)
        link_ids: dict[str, int] = {}
        # Chunk by chunk: render, register the links not seen yet, track and build; rendering and building
        # chunk n+1 overlap with chunk n on the wire (both yield to the event loop between slices of messages),
        # and a chunk is handed over once the previous one is on the wire (and is being recorded).
        in_flight: asyncio.Task[None] | None = None
        on_the_wire = asyncio.Event()  # set once in_flight's chunk is out
        try:
            for start in range(0, len(triples), self.options.chunk_size):
                rendered, unrenderable = await self._render_chunk(
                    plan, triples[start : start + self.options.chunk_size]
                )
                urls = [u for u in compose.trackable_urls(rendered, campaign) if u not in link_ids]
                if urls:
                    # A template's links are all new in its first chunk, when nothing is on the wire yet; a
                    # later chunk with new (personalised) links waits for the one in flight, so no two write
                    # transactions of this worker ever overlap.
                    if in_flight is not None:
                        await in_flight
                        in_flight = None
                    async with self.db.transaction() as session:
                        link_ids.update(await sending.register_links(
                            session, tenant_id=campaign.tenant_id, campaign_id=campaign.id, urls=urls
                        ))
                chunk = unrenderable + await self._compose_chunk(rendered, plan, link_ids)
                if in_flight is not None:
                    # The next chunk goes out as soon as this one is on the wire, while it is recorded: the
                    # connections do not idle through a transaction. A budget is read before each chunk, so
                    # with one the chunk waits until the previous one is recorded (see BudgetGuard).
                    await (in_flight if guard is not None else on_the_wire.wait())
                on_the_wire = asyncio.Event()
                in_flight = asyncio.ensure_future(self._send_and_record(
                    provider, plan.resolved, chunk, report, guard, recorded_before=in_flight, sent=on_the_wire))
            if in_flight is not None:
                await in_flight
        finally:
            if in_flight is not None and not in_flight.done():
                in_flight.cancel()
        return report

    async def _render_chunk(
        self, plan: _Plan, triples: list[tuple[int, str | None, Any]]
    ) -> tuple[list[compose.Rendered], list[compose.Composed]]:
        rendered: list[compose.Rendered] = []
        failed: list[compose.Composed] = []
        for start in range(0, len(triples), _COMPOSE_SLICE):
            ok, bad = compose.render_all(
                plan.content, plan.campaign, triples[start : start + _COMPOSE_SLICE], plan.contacts, self.links
            )
            rendered += ok
            failed += bad
            await asyncio.sleep(0)  # let the chunk on the wire make progress
        return rendered, failed

    async def _compose_chunk(
        self, rendered: list[compose.Rendered], plan: _Plan, link_ids: dict[str, int]
    ) -> list[compose.Composed]:
        composed: list[compose.Composed] = []
        for start in range(0, len(rendered), _COMPOSE_SLICE):
            composed += compose.compose_all(
                rendered[start : start + _COMPOSE_SLICE], plan.campaign, plan.sender, self.links, link_ids
            )
            await asyncio.sleep(0)  # let the chunk on the wire make progress
        return composed

    async def _send_and_record(
        self,
        provider: ChannelProvider[Any],
        resolved: channel_service.ResolvedChannel,
        chunk: list[compose.Composed],
        report: DispatchReport,
        guard: send_accounting.BudgetGuard | None,
        *,
        recorded_before: asyncio.Task[None] | None,
        sent: asyncio.Event,
    ) -> None:
        """Send a chunk (`sent` is set once it is out, or failed to go), then record its outcomes once the chunk
        before it (`recorded_before`) is recorded: outcomes are recorded in the order they were sent."""
        try:
            outcomes = await self._send_chunk(provider, resolved, chunk, guard)
        finally:
            sent.set()
        if recorded_before is not None:
            await recorded_before
        if outcomes:
            await self._record(outcomes, report)

    async def _send_chunk(
        self,
        provider: ChannelProvider[Any],
        resolved: channel_service.ResolvedChannel,
        chunk: list[compose.Composed],
        guard: send_accounting.BudgetGuard | None,
    ) -> list[sending.SendOutcome]:
        outcomes = [_failure(c) for c in chunk if c.message is None]
        messages = [c.message for c in chunk if c.message is not None]
        if messages and guard is not None:
            messages = await guard.admit(messages)
        if messages:
            results = await self._send(provider, resolved, messages)
            outcomes += [
                sending.SendOutcome(
                    recipient_id=int(r.ref),
                    ok=r.ok,
                    provider_message_id=r.provider_message_id,
                    transient=r.transient,
                    error=r.error,
                    cost=resolved.cost_per_message * r.billable_units if r.ok else 0,
                    channel_config_id=resolved.channel_config_id,
                    provider=resolved.provider,
                    opted_out=r.opted_out,
                    retry_after=r.retry_after,
                )
                for r in results
            ]
            if any(r.delivered_addresses or r.expired_addresses for r in results):
                await self._record_addresses(resolved.tenant_id, results)
        return outcomes

    async def _record_addresses(self, tenant_id: uuid.UUID, results: list[SendResult]) -> None:
        """Push subscriptions that took a message are stamped; those a push service says are gone, deleted."""
        delivered = [a for r in results for a in r.delivered_addresses]
        expired = [a for r in results for a in r.expired_addresses]
        async with self.db.transaction() as session:
            removed = await audience.record_push_outcomes(session, tenant_id, delivered=delivered, expired=expired)
        if removed:
            logger.info("dispatch: %d push subscription(s) of tenant %s are gone and were removed", removed,
                        tenant_id)

    async def _plan(self, campaign_id: uuid.UUID, recipients: list[claims.ClaimedRecipient]) -> _Plan:
        async with self.db.transaction() as session:
            campaign = await sending.campaign_for_sending(session, campaign_id)
            template = None
            try:
                if campaign.template_id is not None:
                    template = await content.get_template(session, campaign.tenant_id, campaign.template_id)
                message_content = compose.content_of(campaign, template)
                resolved = await channel_service.resolve_channel(
                    session,
                    campaign.tenant_id,
                    campaign.channel,
                    campaign.channel_config_id,
                    secret=self.links.secret,
                    data_dir=self.settings.data_dir,
                )
            except (ClarionError, ValueError) as exc:
                raise CampaignCannotSend(getattr(exc, "message", None) or str(exc)) from exc
            contacts = await audience.contacts_payload(
                session, campaign.tenant_id, [r.contact_id for r in recipients]
            )
            try:
                message_content = await with_addresses(
                    session, campaign, template, message_content, contacts, secret=self.links.secret,
                    data_dir=self.settings.data_dir,
                )
            except ValueError as exc:
                raise CampaignCannotSend(str(exc)) from exc
        sender = compose.pick_sender(campaign, resolved, base_url=self.settings.base_url)
        return _Plan(
            campaign=campaign, content=message_content, contacts=contacts, resolved=resolved, sender=sender
        )

    async def _hold_campaign(
        self, campaign_id: uuid.UUID, recipients: list[claims.ClaimedRecipient], reason: str
    ) -> DispatchReport:
        """Pause a campaign that cannot send at all, with the reason, and give its claimed recipients back:
        failing them one by one would burn the whole audience on a settings mistake."""
        logger.warning("dispatch: campaign %s cannot send, pausing it: %s", campaign_id, reason)
        report = DispatchReport()
        await self._record(
            [
                sending.SendOutcome(recipient_id=r.id, ok=False, transient=True, error=reason)
                for r in recipients
            ],
            report,
        )
        tenant_id = recipients[0].tenant_id
        try:
            async with self.db.transaction() as session:
                campaign = await campaigns.get_campaign(session, tenant_id, campaign_id, for_update=True)
                if campaign.status == "running":
                    await campaigns.transition(
                        session, tenant_id, campaign_id, "pause", reason=f"cannot send: {reason}"
                    )
        except ClarionError as exc:
            logger.warning("dispatch: could not pause campaign %s: %s", campaign_id, exc.message)
        return report

    async def _send(
        self,
        provider: ChannelProvider[Any],
        resolved: channel_service.ResolvedChannel,
        chunk: list[OutgoingMessage],
    ) -> list[SendResult]:
        try:
            if resolved.rate_limit_per_second:
                throttle = Throttle(self.db, resolved.throttle_key, resolved.rate_limit_per_second)
                per_message = await throttle.send(chunk, lambda message: provider.send([message]))
                return [results[0] for results in per_message]
            return await provider.send(chunk)
        except Exception as exc:
            logger.exception("dispatch: provider %s raised; the chunk is retried later", resolved.provider)
            error = f"provider error: {type(exc).__name__}: {exc}"
            return [SendResult.failed(m.ref, error, transient=True) for m in chunk]

    async def _record(self, outcomes: list[sending.SendOutcome], report: DispatchReport) -> None:
        async with self.db.transaction() as session:
            await sending.record_outcomes(session, outcomes, now=utcnow(), lease_owner=self.lease_owner)
        for outcome in outcomes:
            if outcome.ok:
                report.sent += 1
            else:
                report.failed += 1


async def dispatch_loop(database: Database, settings: Settings, stop: asyncio.Event) -> None:
    """The worker's dispatch loop (registered in delivery.tasks)."""
    await Dispatcher(database, settings).run(stop)
