"""Contacts and their consent."""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from typing import Any, BinaryIO

from sqlalchemy import and_, not_
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from clarion.audience import consent, importer, normalize
from clarion.audience import suppression_service as suppressions
from clarion.audience.consent import CHANNELS_OF_ADDRESS
from clarion.audience.push_repository import has_push_subscription  # noqa: F401 - re-exported, see below
from clarion.audience.push_service import push_targets, record_push_outcomes  # noqa: F401 - re-exported
from clarion.audience.repository import ContactRepo, subscription_is
from clarion.audience.schemas import ContactCreate, ContactUpdate, ImportResult
from clarion.audience.suppression_repository import CONTACT_ADDRESS, address_suppressed
from clarion.audience.telegram_chats import link_telegram_chat, telegram_deep_link  # noqa: F401 - re-exported
from clarion.errors import Conflict, Invalid, field_error
from clarion.kit.clock import utcnow
from clarion.kit.pagination import PageRows
from clarion.models import Contact, ContactSubscription
from clarion.tenancy import service as tenancy

# Other domains reach contacts' Telegram chats (link_telegram_chat, telegram_deep_link) and push subscriptions
# (has_push_subscription, push_targets, record_push_outcomes) through this module; they live in their own.

# A channel moving to one of these puts the contact's address for it on the suppression list (reason = status).
# `unsubscribed` does not: the contact may subscribe again.
SUPPRESSING_STATUSES = frozenset({"bounced", "complained"})
# The consent a person's opt-out replaces, whoever reports it (their STOP keyword, their provider): none yet on the
# channel, or subscribed. `bounced` and `complained` were set for a reason an opt-out must not erase.
OPT_OUT_REPLACES = frozenset({None, "subscribed"})


def _normalized_fields(data: dict[str, Any], default_region: str | None) -> dict[str, Any]:
    """Validate and normalise the given fields; every problem is reported at once, by field."""
    errors: list[dict[str, Any]] = []
    out = dict(data)
    checks = {
        "email": normalize.normalize_email,
        "phone": lambda v: normalize.normalize_phone(v, default_region),
        "timezone": normalize.normalize_timezone,
        "locale": normalize.normalize_locale,
        "tags": normalize.normalize_tags,
    }
    for field, check in checks.items():
        value = data.get(field)
        if value is None or (isinstance(value, str) and not value.strip()):
            if field in data and field != "tags":
                out[field] = None
            continue
        try:
            out[field] = check(value)
        except ValueError as exc:
            errors.append(field_error(["body", field], str(exc)))
    if errors:
        raise Invalid(errors[0]["msg"], errors=errors)
    return out


def _set_subscription(contact: Contact, channel: str, status: str, source: str) -> bool:
    """Set one channel's status; True when it changed (or the channel is new). A channel's first change writes its
    row; a default channel set to "subscribed" is no change (see audience.consent)."""
    for sub in contact.subscriptions:
        if sub.channel == channel:
            if sub.status == status:
                return False
            sub.status, sub.changed_at, sub.source = status, utcnow(), source
            return True
    if status == "subscribed" and consent.is_default_channel(contact, channel):
        return False
    contact.subscriptions.append(ContactSubscription(
        tenant_id=contact.tenant_id, channel=channel, status=status, changed_at=utcnow(), source=source))
    return True


async def _suppress_moved(session: AsyncSession, contact: Contact, moved: dict[str, str]) -> None:
    """Suppress the contact's address on each channel that just moved to a suppressing status (same
    transaction). Suppressions are never lifted here: only DELETE /suppressions/{id} does that."""
    for channel, status in moved.items():
        column = CONTACT_ADDRESS.get(channel)
        address = getattr(contact, column.key) if column is not None else None
        if status in SUPPRESSING_STATUSES and address:
            await suppressions.suppress(session, contact.tenant_id, channel, [address], reason=status,
                                        note=f"contact {contact.id} marked {status}")


async def _flush_unique(session: AsyncSession, contact: Contact) -> None:
    # Read before flushing: after a failed flush the object's attributes can no longer be loaded.
    addresses = {"email": contact.email, "phone": contact.phone}
    try:
        # A savepoint, so the request's transaction stays usable after the 409.
        async with session.begin_nested():
            await session.flush()
    except IntegrityError as exc:
        field = "phone" if "phone" in str(exc.orig).lower() else "email"
        raise Conflict(f"another contact already has {field} {addresses[field]}",
                       errors=[field_error(["body", field], "already used by another contact", "unique")]) from exc


async def create_contact(session: AsyncSession, tenant_id: uuid.UUID, data: ContactCreate,
                         *, source: str = "api") -> Contact:
    tenant = await tenancy.get_tenant(session, tenant_id)
    fields = _normalized_fields(data.model_dump(exclude={"subscriptions"}), tenant.default_region)
    if not fields.get("email") and not fields.get("phone"):
        raise Invalid("a contact needs an email or a phone",
                      errors=[field_error(["body", "email"], "email or phone is required", "missing")])
    repo = ContactRepo(session, tenant_id)
    contact = repo.add(Contact(**fields))
    contact.default_subscribed_channels = consent.default_bits(a for a in CHANNELS_OF_ADDRESS if fields.get(a))
    contact.created_via = source
    contact.subscriptions = []
    for channel, status in data.subscriptions.items():
        _set_subscription(contact, channel, status, source)
    await _flush_unique(session, contact)
    await _suppress_moved(session, contact, dict(data.subscriptions))
    return contact


async def get_contact(session: AsyncSession, tenant_id: uuid.UUID, contact_id: uuid.UUID) -> Contact:
    return await ContactRepo(session, tenant_id).get(contact_id)


async def update_contact(session: AsyncSession, tenant_id: uuid.UUID, contact_id: uuid.UUID,
                         data: ContactUpdate, *, source: str = "api") -> Contact:
    tenant = await tenancy.get_tenant(session, tenant_id)
    contact = await ContactRepo(session, tenant_id).get(contact_id)
    changes = data.model_dump(exclude_unset=True, exclude={"subscriptions", "attributes"})
    fields = _normalized_fields(changes, tenant.default_region)
    for field, value in fields.items():
        setattr(contact, field, value)
    if not contact.email and not contact.phone:
        raise Invalid("a contact needs an email or a phone",
                      errors=[field_error(["body", "email"], "email or phone is required", "missing")])
    if data.attributes is not None:
        merged = dict(contact.attributes or {})
        for key, value in data.attributes.items():
            if value is None:
                merged.pop(key, None)
            else:
                merged[key] = value
        contact.attributes = merged
    moved = {channel: status for channel, status in (data.subscriptions or {}).items()
             if _set_subscription(contact, channel, status, source)}
    await _flush_unique(session, contact)
    await _suppress_moved(session, contact, moved)
    return contact


async def delete_contact(session: AsyncSession, tenant_id: uuid.UUID, contact_id: uuid.UUID) -> None:
    repo = ContactRepo(session, tenant_id)
    await repo.remove(await repo.get(contact_id))
    await session.flush()


async def list_contacts(session: AsyncSession, tenant_id: uuid.UUID, *, tag: str | None, q: str | None,
                        subscriptions: dict[str, str], limit: int, cursor: str | None) -> PageRows[Contact]:
    return await ContactRepo(session, tenant_id).list_page(tag=tag, q=q, subscriptions=subscriptions,
                                                           limit=limit, cursor=cursor)


async def set_subscription(session: AsyncSession, tenant_id: uuid.UUID, contact_id: uuid.UUID,
                           channel: str, status: str, source: str) -> Contact:
    """Change one channel's consent (unsubscribe links, STOP keywords, bounces use this). A move to `bounced`
    or `complained` also suppresses the channel's address; nothing here ever lifts a suppression."""
    contact = await ContactRepo(session, tenant_id).get(contact_id)
    changed = _set_subscription(contact, channel, status, source)
    await session.flush()
    if changed:
        await _suppress_moved(session, contact, {channel: status})
    return contact


async def unsubscribe_contacts(session: AsyncSession, tenant_id: uuid.UUID, contact_ids: list[uuid.UUID],
                               channel: str, source: str) -> list[uuid.UUID]:
    """set_subscription(…, "unsubscribed", source) for many contacts at once, in set-based SQL (a provider
    refusing a batch's opted-out numbers), where the opt-out may replace the consent (OPT_OUT_REPLACES). Contacts
    of other tenants are left alone; returns those that changed. Contacts already loaded in this session are not
    refreshed."""
    if not contact_ids:
        return []
    return await ContactRepo(session, tenant_id).unsubscribe(
        list(dict.fromkeys(contact_ids)), channel, source=source, at=utcnow(),
        replacing=sorted(status for status in OPT_OUT_REPLACES if status is not None))


# --- for other domains (campaign recipients) -------------------------------------------------------------

def subscribed_on(channel: str) -> Any:
    """SQL condition on contacts: subscribed on `channel` and the contact's address for it (email for email,
    phone for sms/whatsapp) not on the tenant's suppression list. The one consent rule of every send path:
    campaigns put it in their set-based inserts and claims."""
    return and_(subscription_is(channel, "subscribed"), not_(address_suppressed(channel)))


async def subscription_status(session: AsyncSession, tenant_id: uuid.UUID, contact_id: uuid.UUID,
                              channel: str) -> str | None:
    """The contact's consent status on `channel` (its row or its default), None when it has none there."""
    return consent.status_on(await ContactRepo(session, tenant_id).get(contact_id), channel)


def suppressed_on(channel: str) -> Any:
    """SQL condition on contacts: the contact's address for `channel` is on the suppression list (to tell a
    suppressed contact from an unsubscribed one, e.g. in a skip reason)."""
    return address_suppressed(channel)


async def contact_ids_by_email(session: AsyncSession, tenant_id: uuid.UUID, emails: list[str]) -> dict[str, uuid.UUID]:
    """Normalised email → contact id for the given addresses that exist; invalid or unknown ones are absent."""
    from clarion.models import Contact as _C

    return await ContactRepo(session, tenant_id).ids_by(_C.email, emails)


async def contact_ids_by_phone(session: AsyncSession, tenant_id: uuid.UUID, phones: list[str]) -> dict[str, uuid.UUID]:
    from clarion.models import Contact as _C

    return await ContactRepo(session, tenant_id).ids_by(_C.phone, phones)


async def contact_ids_by_address(session: AsyncSession, tenant_id: uuid.UUID, channel: str,
                                 addresses: list[str]) -> dict[str, uuid.UUID]:
    """Address as contacts store it on `channel` (email, E.164 phone, Telegram chat id) → contact id, for the
    tenant's contacts that have it; a channel without an address column (push) finds none. One query per 1,000."""
    column = CONTACT_ADDRESS.get(channel)
    if column is None:
        return {}
    return await ContactRepo(session, tenant_id).ids_by(column, addresses)


async def contacts_payload(session: AsyncSession, tenant_id: uuid.UUID,
                           ids: list[uuid.UUID]) -> dict[uuid.UUID, dict[str, Any]]:
    """Contact id → the contact-like dict content.rendering.build_context takes (fields, tags, attributes), for
    the given contacts of this tenant; unknown or deleted ones are absent. One query per 1,000 ids."""
    payloads = {}
    for row in await ContactRepo(session, tenant_id).render_fields(list(dict.fromkeys(ids))):
        row["tags"] = list(row.get("tags") or [])
        row["attributes"] = dict(row.get("attributes") or {})
        payloads[row["id"]] = row
    return payloads


# --- import ------------------------------------------------------------------------------------------------

async def import_contacts(session: AsyncSession, tenant_id: uuid.UUID, binary: BinaryIO, *, chunk_rows: int,
                          after_chunk: Callable[[], Awaitable[None]] | None = None,
                          on_progress: Callable[[int], None] | None = None) -> ImportResult:
    """Upsert contacts from a CSV stream (see audience.importer for the file's rules); flushes, never commits."""
    tenant = await tenancy.get_tenant(session, tenant_id)
    return await importer.import_csv(session, tenant_id, binary, default_region=tenant.default_region,
                                     chunk_rows=chunk_rows,
                                     after_chunk=after_chunk, on_progress=on_progress)


def normalize_address(channel: str, raw: str, default_region: str | None) -> str:
    """An address on `channel` as contacts store it (ValueError with the reason): for other domains' input."""
    return normalize.normalize_address(channel, raw, default_region)
