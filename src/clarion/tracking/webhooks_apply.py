"""What an authentic provider webhook call changes, in the tenant of the account it verified for: delivery statuses
(recipients and counters, through campaign.sending.record_events), opt-outs reported with a failure, consent
keywords in inbound messages (STOP / START / HELP), provider consent reports, and Telegram chat links.

Every function flushes, never commits; each returns a JSON-able summary that the call log keeps.
"""

from __future__ import annotations

import logging
import uuid
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from clarion.audience import service as audience
from clarion.campaign import delivery_reports, sending
from clarion.delivery.channels.base import (
    STATUS_DELIVERED,
    STATUS_FAILED,
    STATUS_READ,
    STATUS_SENT,
    ConsentReport,
    InboundMessage,
    StatusUpdate,
)
from clarion.kit.clock import utcnow
from clarion.tenancy import service as tenancy

logger = logging.getLogger("clarion.tracking.webhooks")

# A status becomes this event type; STATUS_SENT moves nothing (the send already recorded `sent`). A read receipt
# is an open: reports count read_rate as opened / sent.
EVENT_OF_STATUS = {STATUS_DELIVERED: "delivered", STATUS_READ: "opened", STATUS_FAILED: "failed"}
UNKNOWN_IDS_KEPT = 20  # unknown message ids listed in a call's outcome (all are counted)

# Consent keywords: one word, any case, surrounding space ignored — the CTIA / carrier standard lists Twilio
# also acts on. YES re-subscribes on SMS only: Twilio lifts its own block on YES, so our state must follow it there,
# while on WhatsApp "yes" is an everyday answer.
OPT_OUT_KEYWORDS = frozenset({"STOP", "STOPALL", "UNSUBSCRIBE", "CANCEL", "END", "QUIT", "REVOKE", "OPTOUT"})
OPT_IN_KEYWORDS = frozenset({"START", "UNSTOP"})
SMS_OPT_IN_KEYWORDS = OPT_IN_KEYWORDS | {"YES"}
HELP_KEYWORDS = frozenset({"HELP", "INFO"})
KEYWORD_SOURCE = "keyword"
DEFAULT_FREQUENCY = "Msg frequency varies"
# Consent statuses a person's own opt-out replaces (the audience domain's rule, the same for providers' reports) /
# own opt-in lifts. Anything else (bounced, complained) was set for a reason a keyword does not undo.
_PERSON_REPLACES = {"unsubscribed": audience.OPT_OUT_REPLACES, "subscribed": frozenset({None, "unsubscribed"})}


@dataclass(frozen=True, slots=True)
class AccountFacts:
    """The verified channel account a call is applied for."""

    tenant_id: uuid.UUID
    channel_config_id: uuid.UUID | None
    provider: str  # the slug: the `source` of what it reports
    channel: str
    config: Any  # the provider's config model (brand_name, help_text, message_frequency where it has them)


@dataclass
class Reply:
    to: InboundMessage
    text: str


@dataclass
class InboundOutcome:
    summary: dict[str, Any] = field(default_factory=dict)
    replies: list[Reply] = field(default_factory=list)


# --- statuses -------------------------------------------------------------------------------------------------


def _as_ref(ref: str | None) -> int | None:
    return int(ref) if ref is not None and ref.isdigit() else None


@dataclass
class StatusesApplied:
    summary: dict[str, Any]  # JSON-able, for the call log
    # Statuses not applicable yet (apply_statuses(hold=True)): their message is not recorded as sent, or its id is
    # known to no recipient yet. Kept in the order they arrived.
    waiting: list[StatusUpdate] = field(default_factory=list)


async def apply_statuses(session: AsyncSession, account: AccountFacts, statuses: list[StatusUpdate], *,
                         hold: bool = False) -> StatusesApplied:
    """Move the recipients these statuses name, set-based: one lookup for every id of the call, one record_events.

    Out of order and replayed statuses change nothing twice (record_events' state machine). A failure the provider
    calls transient, for a message still `sent`, gives the recipient another attempt (campaign.delivery_reports);
    one that says the person opted out also ends the contact's subscription on the channel.

    A fast provider reports on a message before its send is recorded: the recipient is still `sending`, or the
    message id is stored nowhere yet. With `hold`, such statuses are handed back in `waiting` (the caller keeps
    them for later: tracking.webhooks_deferred) instead of being recorded as history that moves nothing, or logged
    as unknown; an opt-out among them still ends the contact's subscription at once. Without `hold` (the wait is
    over) they are applied as they are."""
    by_message, by_ref = await delivery_reports.find_reported(
        session, account.tenant_id, provider_message_ids={s.provider_message_id for s in statuses},
        recipient_ids={ref for s in statuses if (ref := _as_ref(s.ref)) is not None})
    matched: list[tuple[StatusUpdate, delivery_reports.ReportedRecipient]] = []
    unknown: list[str] = []
    waiting: list[StatusUpdate] = []
    early_opt_outs: list[tuple[delivery_reports.ReportedRecipient, StatusUpdate]] = []
    for update in statuses:
        recipient = by_message.get(update.provider_message_id) or by_ref.get(_as_ref(update.ref) or 0)
        if hold and update.status in EVENT_OF_STATUS and (recipient is None
                                                          or recipient.status in sending.NOT_YET_SENT):
            waiting.append(update)
            if recipient is not None and update.opted_out:
                early_opt_outs.append((recipient, update))
        elif recipient is None:
            unknown.append(update.provider_message_id)
        elif update.status in EVENT_OF_STATUS:
            matched.append((update, recipient))
    if unknown:
        logger.info("webhooks: %s reported %d status(es) for message ids no recipient of tenant %s has: %s",
                    account.provider, len(unknown), account.tenant_id, ", ".join(unknown[:UNKNOWN_IDS_KEPT]))

    now = utcnow()
    requeued = await delivery_reports.retry_late_failures(session, [
        delivery_reports.LateFailure(recipient.id, update.error or f"{account.provider}: failed for now")
        for update, recipient in matched
        if update.status == STATUS_FAILED and update.transient and not update.opted_out and recipient.status == "sent"
    ], now=now)

    events: list[sending.EventInput] = []
    opted_out: dict[uuid.UUID, tuple[delivery_reports.ReportedRecipient, str]] = {}
    for update, recipient in matched:
        metadata: dict[str, Any] = {"source": account.provider, "status": update.status}
        if update.status == STATUS_FAILED:
            metadata |= {"error_code": update.error_code, "transient": update.transient,
                         "reason": update.error or f"{account.provider} reported the message failed"}
        counts = not (update.status == STATUS_FAILED and recipient.id in requeued)
        if not counts:
            metadata["requeued"] = True  # history only: the recipient is pending again, with a retry scheduled
        events.append(sending.EventInput(recipient.tenant_id, recipient.campaign_id, recipient.id,
                                         EVENT_OF_STATUS[update.status], update.occurred_at, metadata,
                                         update.provider_message_id, counts))
        if update.opted_out:
            opted_out.setdefault(recipient.contact_id, (recipient, _opt_out_source(account, update)))
    for recipient, source in opted_out.values():
        events.append(sending.EventInput(recipient.tenant_id, recipient.campaign_id, recipient.id, "unsubscribed",
                                         now, {"source": source}))
    moved = await sending.record_events(session, events)

    # The contacts' subscriptions end set-based, one statement per (channel, source) of the call. A held opt-out
    # ends it now (the person must get nothing more); its events follow when the status is applied.
    groups: dict[tuple[str, str], set[uuid.UUID]] = {}
    for recipient, source in [*opted_out.values(),
                              *((r, _opt_out_source(account, u)) for r, u in early_opt_outs)]:
        groups.setdefault((recipient.channel, source), set()).add(recipient.contact_id)
    unsubscribed = 0
    for (channel, source), contact_ids in sorted(groups.items()):
        unsubscribed += len(await audience.unsubscribe_contacts(session, account.tenant_id, sorted(contact_ids),
                                                                channel, source))
    sent_only = sum(1 for s in statuses if s.status == STATUS_SENT)
    return StatusesApplied(
        {"statuses": len(statuses), "matched": len(matched), "moved": sum(moved), "sent_only": sent_only,
         "requeued": len(requeued), "opted_out": len(opted_out), "unsubscribed": unsubscribed,
         "deferred": len(waiting), "unknown": len(unknown), "unknown_message_ids": unknown[:UNKNOWN_IDS_KEPT]},
        waiting)


def _opt_out_source(account: AccountFacts, update: StatusUpdate) -> str:
    return f"{account.provider}:{update.error_code}" if update.error_code else account.provider


# --- consent ----------------------------------------------------------------------------------------------------


async def _person_says(session: AsyncSession, tenant_id: uuid.UUID, contact_id: uuid.UUID, channel: str,
                      status: str, source: str) -> bool:
    """The person's own opt-out ("unsubscribed") or opt-in ("subscribed") on the channel, where it may replace
    their consent there; whether it changed."""
    if await audience.subscription_status(session, tenant_id, contact_id, channel) not in _PERSON_REPLACES[status]:
        return False
    await audience.set_subscription(session, tenant_id, contact_id, channel, status, source)
    return True


def _stored_address(channel: str, raw: str) -> str | None:
    """An address as the provider sent it, as contacts store it: E.164 for phones (WhatsApp sends wa_ids without
    the +), a Telegram chat id as given."""
    if channel not in ("sms", "whatsapp"):
        return raw
    try:
        return audience.normalize_address(channel, raw if raw.startswith("+") else f"+{raw}", None)
    except ValueError:
        return None


async def _contacts_by_address(session: AsyncSession, tenant_id: uuid.UUID, channel: str,
                               raw_addresses: list[str]) -> dict[str, uuid.UUID]:
    """Raw address as the provider sent it → contact id, for the tenant's contacts with it (one query)."""
    stored = {raw: address for raw in raw_addresses if (address := _stored_address(channel, raw)) is not None}
    found = await audience.contact_ids_by_address(session, tenant_id, channel, sorted(set(stored.values())))
    return {raw: found[address] for raw, address in stored.items() if address in found}


async def _brand(session: AsyncSession, account: AccountFacts) -> str:
    brand = getattr(account.config, "brand_name", None)
    return brand or (await tenancy.get_tenant(session, account.tenant_id)).name


def help_text(brand: str, config: Any) -> str:
    custom = getattr(config, "help_text", None)
    if custom:
        return custom
    frequency = getattr(config, "message_frequency", None) or DEFAULT_FREQUENCY
    return f"{brand}: {frequency}. Msg & data rates may apply. Reply STOP to unsubscribe."


def stop_text(brand: str) -> str:
    return f"{brand}: You are unsubscribed and will receive no more messages. Reply START to resubscribe."


def start_text(brand: str, config: Any) -> str:
    frequency = getattr(config, "message_frequency", None) or DEFAULT_FREQUENCY
    return (f"{brand}: You are subscribed again. {frequency}. Msg & data rates may apply. "
            "Reply HELP for help, STOP to unsubscribe.")


def keyword_of(text: str, channel: str) -> str | None:
    """The consent keyword a message is, if it is one: "STOP", "START" or "HELP"."""
    word = text.strip().upper()
    if word in OPT_OUT_KEYWORDS:
        return "STOP"
    if word in (SMS_OPT_IN_KEYWORDS if channel == "sms" else OPT_IN_KEYWORDS):
        return "START"
    if word in HELP_KEYWORDS:
        return "HELP"
    return None


async def apply_inbound(session: AsyncSession, account: AccountFacts, messages: list[InboundMessage], *,
                        secret: str) -> InboundOutcome:
    """Consent keywords in the messages people sent (SMS, WhatsApp; Telegram commands in apply_telegram): STOP and
    its synonyms unsubscribe the sender's contact on this channel at once (before any further claim), START
    re-subscribes, HELP gets the brand's help text; each gets its confirmation reply. A sender who is no contact
    of the tenant is logged, never created; a message that is no keyword is only counted."""
    if account.channel == "telegram":
        return await apply_telegram(session, account, messages, secret=secret)
    outcome = InboundOutcome()
    counts: Counter[str] = Counter()
    contacts = await _contacts_by_address(session, account.tenant_id, account.channel,
                                          [m.from_address for m in messages])
    brand: str | None = None
    for message in messages:
        keyword = keyword_of(message.text, account.channel)
        contact_id = contacts.get(message.from_address)
        counts[keyword or "other"] += 1
        if contact_id is None:
            counts["unknown_sender"] += 1
            logger.info("webhooks: %s message from %s, who is no contact of tenant %s (keyword: %s)",
                        account.provider, message.from_address, account.tenant_id, keyword)
        if keyword is None:
            continue
        brand = brand or await _brand(session, account)
        if keyword == "STOP":
            if contact_id is not None and await _person_says(session, account.tenant_id, contact_id,
                                                             account.channel, "unsubscribed", KEYWORD_SOURCE):
                counts["unsubscribed"] += 1
            outcome.replies.append(Reply(message, stop_text(brand)))
        elif keyword == "START":
            if contact_id is not None and await _person_says(session, account.tenant_id, contact_id,
                                                             account.channel, "subscribed", KEYWORD_SOURCE):
                counts["resubscribed"] += 1
            outcome.replies.append(Reply(message, start_text(brand, account.config)))
        else:
            outcome.replies.append(Reply(message, help_text(brand, account.config)))
    outcome.summary = {"inbound": len(messages), **dict(sorted(counts.items()))}
    return outcome


async def apply_consent(session: AsyncSession, account: AccountFacts, reports: list[ConsentReport]) -> dict[str, Any]:
    """The provider's own word that a person opted out of (or back into) the channel (WhatsApp marketing
    preferences): the contact with that address follows, the provider's reason as the source."""
    contacts = await _contacts_by_address(session, account.tenant_id, account.channel,
                                          [r.address for r in reports])
    changed = unknown = 0
    for report in reports:
        contact_id = contacts.get(report.address)
        if contact_id is None:
            unknown += 1
            logger.info("webhooks: %s consent report for %s, who is no contact of tenant %s", account.provider,
                        report.address, account.tenant_id)
            continue
        changed += await _person_says(session, account.tenant_id, contact_id, account.channel,
                                      "subscribed" if report.subscribed else "unsubscribed",
                                      f"{account.provider}:{report.reason}"[:64])
    return {"consent_reports": len(reports), "consent_changed": changed, "consent_unknown": unknown}


def telegram_linked_text(brand: str) -> str:
    return f"{brand}: You will get our messages in this chat. Send /stop to unsubscribe."


async def apply_telegram(session: AsyncSession, account: AccountFacts, messages: list[InboundMessage], *,
                         secret: str) -> InboundOutcome:
    """Telegram bot commands: "/start <token>" (the contact's deep link) links the chat to that contact and
    subscribes it (audience.link_telegram_chat, checked against the install `secret`); "/stop" (or a STOP keyword)
    ends the chat's contact's telegram subscription, "/start" alone (or START) resumes it, "/help" (HELP) answers
    with the help text. Chats no contact is linked to are logged."""
    outcome = InboundOutcome()
    counts: Counter[str] = Counter()
    contacts = await _contacts_by_address(session, account.tenant_id, "telegram", [m.from_address for m in messages])
    brand = await _brand(session, account) if messages else ""
    for message in messages:
        command, _, argument = message.text.strip().partition(" ")
        command = command.split("@", 1)[0].lower()  # "/start@our_bot" in groups
        if command == "/start" and argument.strip():
            linked = await audience.link_telegram_chat(session, account.tenant_id, argument.strip(),
                                                       message.from_address, secret=secret)
            counts["linked" if linked else "link_refused"] += 1
            if linked:
                outcome.replies.append(Reply(message, telegram_linked_text(brand)))
            continue
        commands = {"/stop": "STOP", "/start": "START", "/help": "HELP"}
        keyword = commands.get(command) if command.startswith("/") else keyword_of(message.text, "telegram")
        counts[keyword or "other"] += 1
        contact_id = contacts.get(message.from_address)
        if keyword is not None and contact_id is None:
            counts["unknown_sender"] += 1
            logger.info("webhooks: telegram %s from chat %s, linked to no contact of tenant %s", keyword,
                        message.from_address, account.tenant_id)
        if keyword == "STOP":
            if contact_id is not None and await _person_says(session, account.tenant_id, contact_id, "telegram",
                                                             "unsubscribed", KEYWORD_SOURCE):
                counts["unsubscribed"] += 1
            outcome.replies.append(Reply(message, f"{brand}: You are unsubscribed. Send /start to resubscribe."))
        elif keyword == "START" and contact_id is not None:
            if await _person_says(session, account.tenant_id, contact_id, "telegram", "subscribed", KEYWORD_SOURCE):
                counts["resubscribed"] += 1
            outcome.replies.append(Reply(message, telegram_linked_text(brand)))
        elif keyword == "HELP":
            outcome.replies.append(Reply(message, help_text(brand, account.config)))
    outcome.summary = {"inbound": len(messages), **dict(sorted(counts.items()))}
    return outcome
