"""Tracking's business rules: opens and clicks (machine-flagged), unsubscribes, conversions, bounces.

Recipients and campaign counters move only through clarion.campaign.sending; consent only through
clarion.audience.service. Every function here flushes; the request edge, the event recorder or the worker
loop owns the transaction.
"""

from __future__ import annotations

import uuid
from collections.abc import Container
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Literal

from sqlalchemy.ext.asyncio import AsyncSession

from clarion.audience import service as audience
from clarion.campaign import sending
from clarion.campaign import service as campaigns
from clarion.config import Settings
from clarion.content import rendering
from clarion.content import service as content
from clarion.errors import Invalid, NotFound, field_error
from clarion.kit import tracking_urls
from clarion.kit.clock import utcnow
from clarion.kit.signing import signer_for
from clarion.models import BounceRecord
from clarion.tracking import repository
from clarion.tracking.bounces import BouncedAddress, normalise_message_id, parse_bounce
from clarion.tracking.machine import MachineRules, RequestFacts
from clarion.tracking.repository import BounceRepo, ConversionRepo, SeenClients
from clarion.tracking.schemas import BounceOutcome, BounceResult, ConversionCreate, ConversionRead

# --- opens and clicks ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TrackedHit:
    """One open or click as the public endpoint saw it; written later, in a batch, by the event recorder."""

    kind: Literal["open", "click"]
    recipient_id: int
    facts: RequestFacts
    occurred_at: datetime
    link_id: int | None = None
    url: str | None = None


def _hit_metadata(hit: TrackedHit, flags: dict[str, object]) -> dict[str, Any]:
    metadata: dict[str, Any] = {"ip": hit.facts.ip, "user_agent": hit.facts.user_agent, "flags": flags}
    if hit.facts.method.upper() != "GET":
        metadata["method"] = hit.facts.method.upper()
    if hit.link_id is not None:
        metadata["link_id"], metadata["url"] = hit.link_id, hit.url
    return metadata


@dataclass(frozen=True)
class RecordedHits:
    count: int  # hits recorded (those of deleted recipients are dropped)
    campaigns: dict[int, tuple[uuid.UUID, uuid.UUID]]  # recipient id → (tenant id, campaign id) of those seen
    # (contact id, client key) of each client the batch saw make a human event: stored as seen once it commits
    clients: list[tuple[uuid.UUID, str]] = field(default_factory=list)


async def record_hits(session: AsyncSession, hits: list[TrackedHit], rules: MachineRules, *,
                      known_clients: Container[tuple[uuid.UUID, str]] = ()) -> RecordedHits:
    """Record a batch of opens and clicks in order, set-based: a constant number of statements per batch.

    Clients of human events are remembered per contact, so a later fast click from the same device passes.
    `known_clients` holds (contact id, client key) pairs already stored as seen (the caller's memory of earlier
    batches, RecordedHits.clients): they are neither looked up nor written again.
    """
    # Locked and read once, for the verdicts here and for record_events below.
    states = await sending.lock_event_states(session, {hit.recipient_id for hit in hits})
    hasty = {(state["contact_id"], hit.facts.client_key) for hit in hits if hit.kind == "click"
             and (state := states.get(hit.recipient_id)) is not None
             and rules.is_hasty(state["sent_at"], hit.occurred_at)}
    seen = SeenClients(session)
    known = {client for client in hasty if client in known_clients}
    known |= await seen.seen_among(hasty - known)
    owners = {rid: (state["tenant_id"], state["campaign_id"]) for rid, state in states.items()}
    remembered: dict[tuple[uuid.UUID, str], tuple[uuid.UUID, uuid.UUID, str, datetime]] = {}
    events: list[sending.EventInput] = []
    for hit in hits:
        state = states.get(hit.recipient_id)
        if state is None:
            continue
        tenant_id, campaign_id = owners[hit.recipient_id]
        client = (state["contact_id"], hit.facts.client_key)
        if hit.kind == "open":
            verdict = rules.classify_open(hit.facts)
        else:
            verdict = rules.classify_click(hit.facts, sent_at=state["sent_at"], clicked_at=hit.occurred_at,
                                           client_seen=client in known or client in remembered)
        events.append(sending.EventInput(tenant_id, campaign_id, hit.recipient_id,
                                         "opened" if hit.kind == "open" else "clicked", hit.occurred_at,
                                         _hit_metadata(hit, verdict.flags())))
        if not verdict.machine:
            remembered.setdefault(client, (tenant_id, client[0], client[1], hit.occurred_at))
    await sending.record_events(session, events, locked=states)
    await seen.remember(row for client, row in remembered.items() if client not in known_clients)
    return RecordedHits(len(events), owners, list(remembered))


@dataclass(frozen=True)
class ClickTarget:
    recipient_id: int
    link_id: int
    campaign_id: uuid.UUID
    url: str


@dataclass(frozen=True)
class LinkTarget:
    tenant_id: uuid.UUID
    campaign_id: uuid.UUID
    url: str


async def find_link(session: AsyncSession, link_id: int) -> LinkTarget | None:
    link = await sending.get_link(session, link_id)
    return LinkTarget(link.tenant_id, link.campaign_id, link.url) if link is not None else None


async def recipient_campaigns(session: AsyncSession,
                              recipient_ids: set[int]) -> dict[int, tuple[uuid.UUID, uuid.UUID]]:
    """recipient id → (tenant id, campaign id), for those that exist: one query."""
    refs = await sending.get_recipient_refs(session, recipient_ids)
    return {rid: (ref.tenant_id, ref.campaign_id) for rid, ref in refs.items()}


# --- view in browser ---------------------------------------------------------------------------------------

VIEW = "view"  # the signing purpose of the dispatcher's view_in_browser_url (delivery.compose.Links)


def view_recipient(secret: str, token: str) -> int | None:
    """The recipient a "view in browser" token names, if it verifies."""
    payload = signer_for(secret).verify(VIEW, token)
    if payload is None or len(payload) != 1:
        return None
    [item] = payload
    return item if isinstance(item, int) and not isinstance(item, bool) and item > 0 else None


async def render_for_browser(session: AsyncSession, recipient_id: int, *, base_url: str, secret: str,
                             token: str) -> str | None:
    """The recipient's email HTML as the send rendered it (template, contact, campaign, defaults), or None when
    the recipient, its contact or an email template is gone, or the template no longer renders for it."""
    ref = await sending.get_recipient_ref(session, recipient_id)
    if ref is None or ref.channel != "email":
        return None
    campaign = await sending.campaign_for_sending(session, ref.campaign_id)
    if campaign.template_id is None:
        return None
    try:
        template = await content.get_template(session, ref.tenant_id, campaign.template_id)
    except NotFound:
        return None
    contact = (await audience.contacts_payload(session, ref.tenant_id, [ref.contact_id])).get(ref.contact_id)
    if template.channel != "email" or contact is None:
        return None
    base = base_url.rstrip("/")
    try:
        context = rendering.build_context(
            contact, campaign={"id": str(campaign.id), "name": campaign.name}, variables=template.variables or {},
            unsubscribe_url=tracking_urls.unsubscribe_url(base, secret, recipient_id),
            view_in_browser_url=f"{base}/t/v/{token}")
        return rendering.render_email(content.email_parts(template), context).html
    except rendering.RenderError:
        return None


# --- unsubscribes -------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class UnsubscribeView:
    """What the confirmation page may show: the channel and a masked address, never the full one."""

    channel: str
    masked_address: str | None
    already: bool


def _mask(address: str | None) -> str | None:
    if not address:
        return None
    if "@" in address:
        local, _, domain = address.partition("@")
        return f"{local[:1]}{'•' * max(1, min(len(local) - 1, 6))}@{domain}"
    return f"{'•' * max(1, len(address) - 4)}{address[-4:]}"


async def unsubscribe_view(session: AsyncSession, recipient_id: int) -> UnsubscribeView | None:
    ref = await sending.get_recipient_ref(session, recipient_id)
    if ref is None:
        return None
    status = None
    if ref.contact_id is not None:
        status = await audience.subscription_status(session, ref.tenant_id, ref.contact_id, ref.channel)
    return UnsubscribeView(ref.channel, _mask(ref.email if ref.channel == "email" else ref.phone),
                           already=status is not None and status != "subscribed")


async def unsubscribe(session: AsyncSession, recipient_id: int, *, occurred_at: datetime,
                      metadata: dict[str, Any] | None = None) -> bool | None:
    """Unsubscribe the recipient's contact from the campaign's channel. True if consent changed now, False if
    the contact was already not subscribed (a replay changes nothing), None if the recipient is gone."""
    ref = await sending.get_recipient_ref(session, recipient_id)
    if ref is None:
        return None
    if ref.contact_id is None:
        return False
    status = await audience.subscription_status(session, ref.tenant_id, ref.contact_id, ref.channel)
    if status is not None and status != "subscribed":
        return False
    await audience.set_subscription(session, ref.tenant_id, ref.contact_id, ref.channel, "unsubscribed",
                                    "unsubscribe_link")
    await sending.record_event(session, tenant_id=ref.tenant_id, campaign_id=ref.campaign_id,
                               recipient_id=ref.id, type="unsubscribed", occurred_at=occurred_at,
                               metadata=metadata)
    return True


# --- conversions --------------------------------------------------------------------------------------------


def _recipient_from_token(secret: str, token: str) -> int | None:
    for purpose in (tracking_urls.CLICK, tracking_urls.OPEN, tracking_urls.UNSUBSCRIBE):
        ids = tracking_urls.parse_token(secret, purpose, token)
        if ids is not None:
            return ids[0]
    return None


async def record_conversion(session: AsyncSession, tenant_id: uuid.UUID, data: ConversionCreate, *,
                            secret: str) -> ConversionRead:
    """A conversion of a campaign's contact; the recipient moves to `converted` and the campaign's revenue
    grows. A repeated idempotency key returns the first conversion and changes nothing."""
    recipient_id: int | None = None
    campaign_id, contact_id = data.campaign_id, data.contact_id
    if data.token is not None:
        recipient_id = _recipient_from_token(secret, data.token)
        ref = await sending.get_recipient_ref(session, recipient_id) if recipient_id is not None else None
        if ref is None or ref.tenant_id != tenant_id:
            raise NotFound("no recipient for this tracking token",
                           errors=[field_error(["body", "token"], "not a tracking token of this account")])
        if campaign_id is not None and campaign_id != ref.campaign_id:
            raise Invalid("the token belongs to another campaign",
                          errors=[field_error(["body", "campaign_id"], "does not match the token's campaign")])
        campaign_id, contact_id = ref.campaign_id, ref.contact_id
    assert campaign_id is not None  # the schema requires a token or campaign_id + contact_id
    campaign = await campaigns.get_campaign(session, tenant_id, campaign_id)
    currency = (data.currency or campaign.currency).upper()
    if currency != campaign.currency:
        raise Invalid(f"currency must be the campaign's currency, {campaign.currency}",
                      errors=[field_error(["body", "currency"], f"must be {campaign.currency}")])
    if data.token is None and contact_id is not None:
        await audience.get_contact(session, tenant_id, contact_id)  # 404 for an unknown or foreign contact
        recipient_id = await repository.recipient_id_for_contact(session, tenant_id, campaign_id, contact_id)
    occurred_at = data.occurred_at or utcnow()
    conversions = ConversionRepo(session, tenant_id)
    conversion_id = await conversions.insert_once({
        "campaign_id": campaign_id, "recipient_id": recipient_id, "contact_id": contact_id,
        "revenue": data.revenue, "currency": currency, "occurred_at": occurred_at,
        "idempotency_key": data.idempotency_key, "metadata": data.metadata, "created_at": utcnow()})
    if conversion_id is None:
        assert data.idempotency_key is not None  # only a taken key makes the insert a no-op
        first = await conversions.by_idempotency_key(data.idempotency_key)
        assert first is not None
        return ConversionRead(id=first.id, campaign_id=first.campaign_id, recipient_id=first.recipient_id,
                              contact_id=first.contact_id, revenue=first.revenue, currency=first.currency,
                              occurred_at=first.occurred_at, duplicate=True)
    if recipient_id is not None:
        await sending.record_event(session, tenant_id=tenant_id, campaign_id=campaign_id,
                                   recipient_id=recipient_id, type="converted", occurred_at=occurred_at,
                                   metadata={"revenue": data.revenue, "currency": currency,
                                             "conversion_id": conversion_id, **(data.metadata or {})})
    if data.revenue:
        await sending.add_revenue(session, tenant_id=tenant_id, campaign_id=campaign_id,
                                  recipient_id=recipient_id, amount=data.revenue)
    return ConversionRead(id=conversion_id, campaign_id=campaign_id, recipient_id=recipient_id,
                          contact_id=contact_id, revenue=data.revenue, currency=currency, occurred_at=occurred_at,
                          duplicate=False)


# --- bounces ------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class BounceSettings:
    soft_threshold: int = 3
    soft_window: timedelta = field(default_factory=lambda: timedelta(days=7))

    @classmethod
    def from_settings(cls, settings: Settings) -> BounceSettings:
        return cls(settings.soft_bounce_threshold, timedelta(days=settings.soft_bounce_window_days))


async def _recipient_for_message(session: AsyncSession, message_id: str | None) -> Any:
    if not message_id:
        return None
    for candidate in (message_id, message_id.strip("<>")):
        ref = await sending.find_recipient_by_provider_message_id(session, candidate)
        if ref is not None:
            return ref
    return None


async def _mark_address_bounced(session: AsyncSession, tenant_id: uuid.UUID, contact_id: uuid.UUID) -> bool:
    """Email consent → bounced, unless the contact already chose to leave (that choice is kept)."""
    status = await audience.subscription_status(session, tenant_id, contact_id, "email")
    if status in ("bounced", "unsubscribed", "complained"):
        return False
    await audience.set_subscription(session, tenant_id, contact_id, "email", "bounced", "bounce")
    return True


async def _apply_bounce(session: AsyncSession, tenant_id: uuid.UUID, bounced: BouncedAddress, ref: Any,
                        message_id: str | None, rules: BounceSettings) -> BounceResult:
    contact_id = ref.contact_id if ref is not None else None
    if contact_id is None:
        contact_id = (await audience.contact_ids_by_email(session, tenant_id, [bounced.email])).get(bounced.email)
    now = utcnow()
    bounces = BounceRepo(session, tenant_id)
    bounces.add(BounceRecord(
        contact_id=contact_id, campaign_id=ref.campaign_id if ref is not None else None,
        recipient_id=ref.id if ref is not None else None, email=bounced.email, kind=bounced.kind,
        action=bounced.action, status=bounced.status, diagnostic=(bounced.diagnostic or None),
        original_message_id=message_id, occurred_at=now))
    await session.flush()
    address_bounced = bounced.kind == "hard"
    if bounced.kind == "soft" and contact_id is not None:
        recent = await bounces.count_soft_since(contact_id, now - rules.soft_window)
        address_bounced = recent >= rules.soft_threshold
    contact_marked = False
    if address_bounced and contact_id is not None:
        contact_marked = await _mark_address_bounced(session, tenant_id, contact_id)
    if address_bounced and ref is not None:
        await sending.record_event(
            session, tenant_id=tenant_id, campaign_id=ref.campaign_id, recipient_id=ref.id, type="bounced",
            occurred_at=now, provider_message_id=message_id,
            metadata={"kind": bounced.kind, "action": bounced.action, "status": bounced.status,
                      "diagnostic": bounced.diagnostic, "email": bounced.email})
    return BounceResult(email=bounced.email, kind=bounced.kind, status=bounced.status, contact_id=contact_id,
                        recipient_id=ref.id if ref is not None else None, address_bounced=address_bounced,
                        contact_marked=contact_marked)


async def handle_bounce(session: AsyncSession, raw: bytes, *, tenant_id: uuid.UUID | None,
                        rules: BounceSettings | None = None) -> BounceOutcome:
    """Apply one bounce message. With `tenant_id` (the API) only that tenant's recipients and contacts are
    touched; without (the Maildir) the original Message-ID must name one of our recipients."""
    rules = rules or BounceSettings()
    report = parse_bounce(raw)
    if report.ignored:
        return BounceOutcome(ignored=report.ignored, original_message_id=report.original_message_id)
    message_id = normalise_message_id(report.original_message_id)
    ref = await _recipient_for_message(session, message_id)
    if ref is not None and tenant_id is not None and ref.tenant_id != tenant_id:
        ref = None  # another tenant's message: not this caller's business, and not a hint that it exists
    owner = tenant_id or (ref.tenant_id if ref is not None else None)
    if owner is None:
        return BounceOutcome(ignored="unknown_message", original_message_id=message_id)
    results = []
    for bounced in report.recipients:
        # The returned message names one recipient; with several failing addresses only its own is that one.
        matches = ref is not None and ((ref.email or "").lower() == bounced.email or len(report.recipients) == 1)
        results.append(await _apply_bounce(session, owner, bounced, ref if matches else None, message_id, rules))
    return BounceOutcome(bounces=results, original_message_id=message_id)
