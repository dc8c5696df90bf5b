"""Sending on request: seed 002's process-daily for one tenant, and test sends of a campaign's message.

Both talk to providers, so both run their own short transactions on the Database instead of the request's
session (the caller commits that first): no transaction stays open while a provider is talked to.
"""

from __future__ import annotations

import re
import uuid
from typing import Any

import css_inline

from clarion.audience import service as audience
from clarion.campaign import sending
from clarion.campaign import service as campaigns
from clarion.config import Settings
from clarion.content import rendering
from clarion.content import service as content
from clarion.db import Database
from clarion.delivery import channel_service, compose
from clarion.delivery.channels.base import ProviderContext
from clarion.delivery.dispatch import Dispatcher, with_addresses
from clarion.delivery.outbox_service import DatabaseOutboxIndex
from clarion.delivery.sending_schemas import (
    ProcessDailyResult,
    TestSendRequest,
    TestSendResult,
    TestSendStatus,
)
from clarion.errors import Invalid, field_error
from clarion.kit.clock import clock

# A test message is nobody's: it is neither tracked nor able to unsubscribe anyone.
TEST_REF = "test"
SAMPLE_CONTACT = {
    "first_name": "Sample",
    "last_name": "Contact",
    "locale": "en",
    "tags": [],
    "attributes": {},
}


async def running_campaign_ids(database: Database, tenant_id: uuid.UUID) -> list[uuid.UUID]:
    ids: list[uuid.UUID] = []
    cursor = None
    async with database.transaction() as session:
        while True:
            page = await campaigns.list_campaigns(
                session, tenant_id, status="running", limit=500, cursor=cursor
            )
            ids.extend(c.id for c in page.rows)
            cursor = page.next_cursor
            if cursor is None:
                return ids


async def process_daily(database: Database, settings: Settings, tenant_id: uuid.UUID) -> ProcessDailyResult:
    """Send everything of this tenant's running campaigns that is due now, once, and say what went out.
    Other tenants' recipients are never claimed: the claim is made campaign by campaign."""
    # A cron-driven deployment may run no worker: start what is due and complete what is done here too.
    async with database.transaction() as session:
        await sending.start_due_campaigns(session, now=clock.now(), tenant_id=tenant_id)
    dispatcher = Dispatcher(database, settings)
    try:
        report = await dispatcher.drain(await running_campaign_ids(database, tenant_id))
    finally:
        await dispatcher.close()
    async with database.transaction() as session:
        await sending.complete_finished_campaigns(session, now=clock.now(), tenant_id=tenant_id)
    return ProcessDailyResult(
        date=clock.today(),
        campaigns_processed=len(report.campaigns),
        messages_sent=report.sent,
        message=f"Processed {len(report.campaigns)} campaigns, sent {report.sent} messages",
    )


def _checked_addresses(channel: str, addresses: list[str]) -> list[str]:
    checked, errors = [], []
    for i, raw in enumerate(addresses):
        try:
            if channel == "telegram":
                # A chat id, as the bot sees it (the contact's telegram_chat_id once linked).
                if not re.fullmatch(r"-?\d{1,20}", raw.strip()):
                    raise ValueError("must be a Telegram chat id (digits)")
                checked.append(raw.strip())
                continue
            if channel not in ("email", "sms", "whatsapp"):
                raise ValueError(f"test sends on {channel} are not supported yet")
            # Test addresses are typed in full: a phone must carry its country code.
            checked.append(audience.normalize_address(channel, raw, None))
        except ValueError as exc:
            errors.append(field_error(["body", "to", i], str(exc)))
    if errors:
        raise Invalid(f"to[{errors[0]['loc'][2]}]: {errors[0]['msg']}", errors=errors)
    return list(dict.fromkeys(checked))


async def send_test(
    database: Database,
    settings: Settings,
    tenant_id: uuid.UUID,
    campaign_id: uuid.UUID,
    request: TestSendRequest,
) -> TestSendResult:
    """Render the campaign's message and send it to `request.to` through the campaign's channel. The contact is
    the campaign's first recipient when it has one, else a sample; recipients and stats are not touched."""
    async with database.transaction() as session:
        campaign = await campaigns.get_campaign(session, tenant_id, campaign_id)
        addresses = _checked_addresses(campaign.channel, request.to)
        template = None
        if campaign.template_id is not None:
            template = await content.get_template(session, tenant_id, campaign.template_id)
        try:
            message_content = compose.content_of(campaign, template)
        except ValueError as exc:
            raise Invalid(str(exc), errors=[field_error(["path", "campaign_id"], str(exc))]) from exc
        first = await campaigns.list_recipients(session, tenant_id, campaign_id, limit=1)
        contact: dict[str, Any] | None = None
        contact_id = first.rows[0].contact_id if first.rows else None
        if contact_id is not None:
            contact = (await audience.contacts_payload(session, tenant_id, [contact_id])).get(contact_id)
        try:
            message_content = await with_addresses(session, campaign, template, message_content, {},
                                                   secret=settings.resolved_secret_key(), data_dir=settings.data_dir)
        except ValueError as exc:
            raise Invalid(str(exc), errors=[field_error(["template"], str(exc))]) from exc
        resolved = await channel_service.resolve_channel(
            session,
            tenant_id,
            campaign.channel,
            campaign.channel_config_id,
            secret=settings.resolved_secret_key(),
            data_dir=settings.data_dir,
        )
    links = compose.Links(base_url=settings.base_url, secret=settings.resolved_secret_key())
    inert_unsubscribe = f"{settings.base_url}/t/u/{TEST_REF}"
    sender = compose.pick_sender(campaign, resolved, base_url=settings.base_url)
    messages = []
    for i, address in enumerate(addresses):
        as_contact = contact if contact is not None else {**SAMPLE_CONTACT, "email": address}
        try:
            rendered = compose.render_one(
                message_content, campaign, 0, address, as_contact, links, unsubscribe_url=inert_unsubscribe
            )
        except (rendering.RenderError, css_inline.InlineError) as exc:
            raise Invalid(
                f"the message does not render for the {'recipient' if contact else 'sample'} contact: {exc}",
                code="render_failed",
                errors=[field_error(["template"], str(exc), "render_error")],
            ) from exc
        try:
            messages.append(
                compose.build_message(
                    rendered,
                    campaign,
                    sender,
                    links,
                    ref=f"{TEST_REF}-{i}",
                    subject_prefix=compose.TEST_SUBJECT_PREFIX,
                    unsubscribe_url=inert_unsubscribe,
                )
            )
        except ValueError as exc:
            raise Invalid(
                f"cannot build the message: {exc}", errors=[field_error(["body", "to", i], str(exc))]
            ) from exc
    context = ProviderContext(outbox_index=DatabaseOutboxIndex(database), public_base_url=settings.base_url)
    async with channel_service.build_provider(resolved, context=context) as provider:
        results = await provider.send(messages)
    return TestSendResult(
        campaign_id=campaign_id,
        contact_source="recipient" if contact is not None else "sample",
        contact_id=contact_id if contact is not None else None,
        provider=resolved.provider,
        results=[
            TestSendStatus(to=address, ok=r.ok, provider_message_id=r.provider_message_id, error=r.error)
            for address, r in zip(addresses, results, strict=True)
        ],
        sent=sum(1 for r in results if r.ok),
    )
