"""Provider webhooks: every call to /webhooks/<name>[/<kind>] goes through here.

1. Candidates: the enabled channel accounts (of any tenant) of the providers answering to <name> whose stored
   webhook_account is one the call names (delivery.channel_service.webhook_candidates).
2. Authenticity: each candidate checks the call's signature (constant time, in the provider). No candidate
   verifying is the provider's rejection (401 / 403) and nothing at all is written.
3. For each account it verified for, in one transaction: the raw call is logged (headers without secrets, the
   body, its sha256) — an exact replay (same account, same bytes) stops there, acknowledged, changing nothing —
   then what it carried is applied in that account's tenant (tracking.webhooks_apply) and its outcome logged;
   statuses about a send not recorded yet wait for it as a job, in the same transaction (webhooks_deferred).
4. After the commit: replies to inbound keywords go out (Twilio's in the webhook response as TwiML, others
   through the provider's API), else the provider's plain acknowledgement.
"""

from __future__ import annotations

import hashlib
import logging
import re
import uuid
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from clarion.delivery import channel_service
from clarion.delivery.channels.base import (
    ChannelProvider,
    ProviderContext,
    WebhookRejected,
    WebhookRequest,
    WebhookResponse,
    WebhookResult,
)
from clarion.errors import Invalid, NotFound
from clarion.kit.clock import utcnow
from clarion.kit.pagination import PageRows
from clarion.models import WebhookCall
from clarion.tracking import webhooks_apply, webhooks_deferred
from clarion.tracking.webhooks_apply import AccountFacts, Reply
from clarion.tracking.webhooks_repository import WebhookCallRepo, purge_received_before

logger = logging.getLogger("clarion.tracking.webhooks")

MAX_BODY_BYTES = 1024 * 1024  # provider calls are a few kB; WhatsApp batches stay far below this
KIND = re.compile(r"^[a-z][a-z0-9_-]{0,31}$")
REDACTED = "[redacted]"
# Header values never kept in the call log: signatures (a replayable proof), credentials and shared secrets.
# (Twilio's I-Twilio-Idempotency-Token is neither, and it is what tells a provider retry apart.)
_SECRET_HEADER = re.compile(r"signature|secret|(?<!idempotency-)token|authorization|cookie|api[-_]?key|password",
                            re.IGNORECASE)


@dataclass
class Account:
    """A candidate account and a provider built from its config, for one call."""

    resolved: channel_service.ResolvedChannel
    provider: ChannelProvider[Any]

    @property
    def facts(self) -> AccountFacts:
        r = self.resolved
        return AccountFacts(tenant_id=r.tenant_id, channel_config_id=r.channel_config_id, provider=r.provider,
                            channel=r.channel, config=r.config)


@dataclass
class CallOutcome:
    account: Account
    call_id: int | None  # None: an exact replay, nothing applied
    summary: dict[str, Any] = field(default_factory=dict)
    replies: list[Reply] = field(default_factory=list)
    invalid: Invalid | None = None  # authentic, but not the provider's format (logged, answered 422)


def known_webhook(name: str) -> list[type[ChannelProvider[Any]]]:
    """The provider classes answering to /webhooks/<name>; NotFound for a name none uses."""
    providers = channel_service.webhook_providers(name)
    if not providers:
        raise NotFound(f"no channel provider receives webhooks at /webhooks/{name}")
    return providers


def check_kind(kind: str | None) -> str | None:
    if kind is not None and not KIND.match(kind):
        raise NotFound(f"no webhook endpoint /{kind}")
    return kind


def redacted_headers(headers: dict[str, str]) -> dict[str, str]:
    return {name: REDACTED if _SECRET_HEADER.search(name) else value for name, value in sorted(headers.items())}


def named_accounts(name: str, request: WebhookRequest) -> list[str] | None:
    """The accounts the call names, by any provider answering to `name` (None: it names none, so every account)."""
    named: list[str] = []
    for cls in known_webhook(name):
        try:
            accounts = cls.webhook_accounts_named(request)
        except Invalid:
            # Not even the provider's format: no account is named, so the call is refused as unauthenticated
            # (401/403) rather than told, before any signature check, what is wrong with it.
            accounts = []
        if accounts is None:
            return None
        named.extend(accounts)
    return sorted(set(named))


async def candidates(session: AsyncSession, name: str, request: WebhookRequest, *, secret: str,
                     public_base_url: str | None) -> list[Account]:
    """The enabled accounts this call may be for, each with its provider (close them: close_all)."""
    context = ProviderContext(public_base_url=public_base_url)
    resolved = await channel_service.webhook_candidates(session, name, named_accounts(name, request), secret=secret)
    return [Account(r, channel_service.build_provider(r, context=context)) for r in resolved]


def handshake(accounts: list[Account], request: WebhookRequest) -> WebhookResponse | None:
    """The first account that recognises a GET verification call answers it."""
    for account in accounts:
        answer = account.provider.handshake(request)
        if answer is not None:
            return answer
    return None


def authentic(name: str, accounts: list[Account], request: WebhookRequest) -> list[Account]:
    """The accounts the call verifies for. None verifying raises the provider's WebhookRejected — the first
    candidate's own complaint, or (no candidate at all) the provider class's rejection status."""
    verified: list[Account] = []
    first_refusal: WebhookRejected | None = None
    for account in accounts:
        try:
            account.provider.verify_webhook(request)
        except WebhookRejected as exc:
            first_refusal = first_refusal or exc
            continue
        verified.append(account)
    if verified:
        return verified
    if first_refusal is not None:
        raise first_refusal
    status = known_webhook(name)[0].webhook_rejected_status
    raise WebhookRejected("no channel account of this install is the one this call is for, or its signature does "
                          "not verify", status=status)


async def apply_call(session: AsyncSession, account: Account, request: WebhookRequest, *, kind: str | None,
                     secret: str) -> CallOutcome:
    """Log one authentic call for one account and apply what it carried, unless it is an exact replay.
    `secret`: the install secret (Telegram /start tokens are signed with it)."""
    facts = account.facts
    invalid: Invalid | None = None
    result = WebhookResult()
    try:
        result = account.provider.parse_webhook(request)
    except Invalid as exc:
        invalid = exc
    calls = WebhookCallRepo(session, facts.tenant_id)
    call_id = await calls.insert_once({
        "channel_config_id": facts.channel_config_id, "provider": facts.provider, "kind": kind,
        "received_at": utcnow(), "headers": redacted_headers(dict(request.headers)),
        "body": request.body.decode("utf-8", "replace"), "body_sha256": hashlib.sha256(request.body).hexdigest(),
    })
    if call_id is None:
        logger.info("webhooks: %s call replayed for channel %s; acknowledged, nothing applied", facts.provider,
                    facts.channel_config_id)
        return CallOutcome(account, None, {"replay": True})
    outcome = CallOutcome(account, call_id, invalid=invalid)
    if invalid is not None:
        outcome.summary = {"error": invalid.message}
    else:
        if result.statuses:
            outcome.summary |= await webhooks_deferred.apply_statuses(session, facts, result.statuses,
                                                                      call_id=call_id)
        if result.inbound:
            inbound = await webhooks_apply.apply_inbound(session, facts, result.inbound, secret=secret)
            outcome.summary |= inbound.summary
            outcome.replies = inbound.replies
        if result.consent:
            outcome.summary |= await webhooks_apply.apply_consent(session, facts, result.consent)
        if outcome.replies:
            outcome.summary["replies"] = len(outcome.replies)
    await calls.set_outcome(call_id, outcome.summary)
    return outcome


async def respond(outcomes: list[CallOutcome]) -> WebhookResponse:
    """After the commit: send the replies, and answer the provider. A reply that fails is logged; what the call
    changed stays (consent is already recorded), and the provider is still answered 200 so it does not resend."""
    answer: WebhookResponse | None = None
    for outcome in outcomes:
        for reply in outcome.replies:
            try:
                response = await outcome.account.provider.reply(reply.to, reply.text)
            except Exception:  # a reply is best effort: the call's effects are committed
                logger.exception("webhooks: replying to %s through %s failed", reply.to.from_address,
                                 outcome.account.resolved.provider)
                continue
            answer = answer or response
    if answer is not None:
        return answer
    return outcomes[0].account.provider.acknowledge() if outcomes else WebhookResponse()


async def close_all(accounts: list[Account]) -> None:
    for account in accounts:
        try:
            await account.provider.close()
        except Exception:  # closing must not hide the call's answer
            logger.warning("webhooks: closing the %s provider failed", account.resolved.provider, exc_info=True)


# --- the call log -----------------------------------------------------------------------------------------------

async def list_calls(session: AsyncSession, tenant_id: uuid.UUID, *, provider: str | None, limit: int,
                     cursor: str | None) -> PageRows[WebhookCall]:
    return await WebhookCallRepo(session, tenant_id).page(provider=provider, limit=limit, cursor=cursor)


async def get_call(session: AsyncSession, tenant_id: uuid.UUID, call_id: int) -> WebhookCall:
    return await WebhookCallRepo(session, tenant_id).get(call_id)


async def purge_calls(session: AsyncSession, *, retention_days: int) -> int:
    """Forget calls older than the retention (every tenant's: the worker's singleton tick)."""
    return await purge_received_before(session, utcnow() - timedelta(days=retention_days))
