from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, Query, Response, status

from clarion.audience import push_service as service
from clarion.audience.push_schemas import PushSubscriptionCreate, PushSubscriptionPage, PushSubscriptionRead
from clarion.db import SessionDep
from clarion.tenancy.deps import ReadAuth, WriteAuth

router = APIRouter(prefix="/push/subscriptions", tags=["push"])


@router.post("", response_model=PushSubscriptionRead, status_code=status.HTTP_201_CREATED,
             responses={200: {"model": PushSubscriptionRead, "description": "The endpoint was registered already "
                                                                             "and is updated"}})
async def register_subscription(data: PushSubscriptionCreate, response: Response, session: SessionDep,
                                auth: WriteAuth) -> PushSubscriptionRead:
    """Register a browser's push subscription (PushSubscription.toJSON()'s endpoint and keys) for a contact and
    subscribe the contact to push. Sending the same endpoint again updates it (200)."""
    row, created = await service.register_push_subscription(session, auth.tenant_id, data)
    if not created:
        response.status_code = status.HTTP_200_OK
    return PushSubscriptionRead.of(row)


@router.get("", response_model=PushSubscriptionPage)
async def list_subscriptions(
    session: SessionDep,
    auth: ReadAuth,
    contact_id: uuid.UUID | None = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    cursor: str | None = None,
) -> PushSubscriptionPage:
    page = await service.list_push_subscriptions(session, auth.tenant_id, contact_id=contact_id, limit=limit,
                                                 cursor=cursor)
    return PushSubscriptionPage(items=[PushSubscriptionRead.of(r) for r in page.rows], next_cursor=page.next_cursor)


@router.get("/{subscription_id}", response_model=PushSubscriptionRead)
async def get_subscription(subscription_id: uuid.UUID, session: SessionDep, auth: ReadAuth) -> PushSubscriptionRead:
    return PushSubscriptionRead.of(await service.get_push_subscription(session, auth.tenant_id, subscription_id))


@router.delete("/{subscription_id}", status_code=status.HTTP_204_NO_CONTENT)
async def delete_subscription(subscription_id: uuid.UUID, session: SessionDep, auth: WriteAuth) -> Response:
    await service.delete_push_subscription(session, auth.tenant_id, subscription_id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)
