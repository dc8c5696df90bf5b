"""Contacts' Web Push subscriptions: registered by the site (POST /push/subscriptions after a browser subscribed),
read by the send pipeline (every subscription of a contact gets the message), and pruned when a push service
says a subscription is gone (404/410)."""

from __future__ import annotations

import uuid
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from clarion.audience.push_repository import PushSubscriptionRepo
from clarion.audience.push_schemas import PushSubscriptionCreate
from clarion.audience.repository import ContactRepo
from clarion.kit.clock import utcnow
from clarion.kit.pagination import PageRows
from clarion.kit.repository import conflict_on_violation
from clarion.models import PushSubscription

PUSH = "push"
REGISTER_SOURCE = "push_register"


async def register_push_subscription(session: AsyncSession, tenant_id: uuid.UUID,
                                     data: PushSubscriptionCreate) -> tuple[PushSubscription, bool]:
    """(the subscription, whether it is new). An endpoint this tenant already has is updated in place: its keys
    (a browser re-subscribed), its contact (another person signed in on that browser) and user agent. The
    contact's push consent becomes `subscribed` (source push_register): the browser's permission prompt is
    the person's opt-in."""
    # service imports this module to re-export it, so its consent function is looked up when called.
    from clarion.audience import service as contacts

    await ContactRepo(session, tenant_id).get(data.contact_id)  # 404 for another tenant's or no contact
    repo = PushSubscriptionRepo(session, tenant_id)
    fields = {"contact_id": data.contact_id, "p256dh": data.keys.p256dh, "auth": data.keys.auth,
              "user_agent": data.user_agent}
    row = await repo.find_by_endpoint(data.endpoint)
    created = row is None
    if row is None:
        row = repo.add(PushSubscription(endpoint=data.endpoint, **fields))
        # Two requests registering one endpoint at once: the loser gets a 409 and can simply send it again.
        async with conflict_on_violation(session, "this endpoint was registered by another request at the same "
                                         "time; send it again to update it"):
            await session.flush()
    else:
        for name, value in fields.items():
            setattr(row, name, value)
        row.updated_at = utcnow()
        await session.flush()
    await contacts.set_subscription(session, tenant_id, data.contact_id, PUSH, "subscribed", REGISTER_SOURCE)
    return row, created


async def get_push_subscription(session: AsyncSession, tenant_id: uuid.UUID,
                                subscription_id: uuid.UUID) -> PushSubscription:
    return await PushSubscriptionRepo(session, tenant_id).get(subscription_id)


async def list_push_subscriptions(session: AsyncSession, tenant_id: uuid.UUID, *, contact_id: uuid.UUID | None,
                                  limit: int, cursor: str | None) -> PageRows[PushSubscription]:
    return await PushSubscriptionRepo(session, tenant_id).page(contact_id=contact_id, limit=limit, cursor=cursor)


async def delete_push_subscription(session: AsyncSession, tenant_id: uuid.UUID, subscription_id: uuid.UUID) -> None:
    """Forget one browser (the site saw it unsubscribe). The contact's push consent is left as it is: another
    browser may still be subscribed, and a contact without any is simply not reachable on push."""
    repo = PushSubscriptionRepo(session, tenant_id)
    await repo.remove(await repo.get(subscription_id))
    await session.flush()


# --- for the send pipeline ------------------------------------------------------------------------------------

async def push_targets(session: AsyncSession, tenant_id: uuid.UUID,
                       contact_ids: list[uuid.UUID]) -> dict[uuid.UUID, list[dict[str, Any]]]:
    """Contact id → its subscriptions as the webpush provider takes them ({"endpoint", "keys": {"p256dh",
    "auth"}}); contacts without any are absent."""
    targets: dict[uuid.UUID, list[dict[str, Any]]] = {}
    for contact_id, endpoint, p256dh, auth in await PushSubscriptionRepo(session, tenant_id).targets(
            list(dict.fromkeys(contact_ids))):
        targets.setdefault(contact_id, []).append({"endpoint": endpoint, "keys": {"p256dh": p256dh, "auth": auth}})
    return targets


async def record_push_outcomes(session: AsyncSession, tenant_id: uuid.UUID, *, delivered: list[str],
                               expired: list[str]) -> int:
    """After a send: stamp last_success_at on the endpoints a push service took a message for, and delete the
    ones it said are gone. Returns how many were deleted."""
    repo = PushSubscriptionRepo(session, tenant_id)
    if delivered:
        await repo.mark_success(list(dict.fromkeys(delivered)), utcnow())
    return await repo.remove_endpoints(list(dict.fromkeys(expired))) if expired else 0
