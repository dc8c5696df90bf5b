from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, File, Query, Request, Response, UploadFile, status

from clarion.audience import service
from clarion.audience.schemas import (
    ContactCreate,
    ContactPage,
    ContactRead,
    ContactUpdate,
    ImportResult,
    SubscriptionStatus,
)
from clarion.db import SessionDep
from clarion.tenancy.deps import ReadAuth, WriteAuth

router = APIRouter(prefix="/contacts", tags=["contacts"])


@router.post("/import", response_model=ImportResult)
async def import_contacts(
    request: Request,
    session: SessionDep,
    auth: WriteAuth,
    file: Annotated[UploadFile, File(description="CSV, UTF-8: email, phone, first_name, last_name, locale, "
                                                "timezone, tags (';'-separated); other columns become attributes")],
) -> ImportResult:
    """Upsert contacts from a CSV upload: by email, else phone. Bad rows are reported by line, good ones imported."""
    # The upload is spooled to disk by the framework and read back in chunks, so size does not cost memory.
    return await service.import_contacts(session, auth.tenant_id, file.file,
                                         chunk_rows=request.app.state.settings.import_chunk_rows)


@router.post("", response_model=ContactRead, status_code=status.HTTP_201_CREATED)
async def create_contact(data: ContactCreate, session: SessionDep, auth: WriteAuth) -> ContactRead:
    return ContactRead.of(await service.create_contact(session, auth.tenant_id, data))


@router.get("", response_model=ContactPage)
async def list_contacts(
    session: SessionDep,
    auth: ReadAuth,
    tag: str | None = None,
    q: Annotated[str | None, Query(description="Matches name, email or phone")] = None,
    sub_email: Annotated[SubscriptionStatus | None, Query(alias="subscription.email")] = None,
    sub_sms: Annotated[SubscriptionStatus | None, Query(alias="subscription.sms")] = None,
    sub_whatsapp: Annotated[SubscriptionStatus | None, Query(alias="subscription.whatsapp")] = None,
    sub_telegram: Annotated[SubscriptionStatus | None, Query(alias="subscription.telegram")] = None,
    sub_push: Annotated[SubscriptionStatus | None, Query(alias="subscription.push")] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    cursor: str | None = None,
) -> ContactPage:
    subscriptions = {channel: value for channel, value in (
        ("email", sub_email), ("sms", sub_sms), ("whatsapp", sub_whatsapp), ("telegram", sub_telegram),
        ("push", sub_push)) if value is not None}
    page = await service.list_contacts(session, auth.tenant_id, tag=tag, q=q, subscriptions=subscriptions,
                                       limit=limit, cursor=cursor)
    return ContactPage(items=[ContactRead.of(c) for c in page.rows], next_cursor=page.next_cursor)


@router.get("/{contact_id}", response_model=ContactRead)
async def get_contact(contact_id: uuid.UUID, session: SessionDep, auth: ReadAuth) -> ContactRead:
    return ContactRead.of(await service.get_contact(session, auth.tenant_id, contact_id))


@router.patch("/{contact_id}", response_model=ContactRead)
async def update_contact(contact_id: uuid.UUID, data: ContactUpdate, session: SessionDep,
                         auth: WriteAuth) -> ContactRead:
    return ContactRead.of(await service.update_contact(session, auth.tenant_id, contact_id, data))


@router.delete("/{contact_id}", status_code=status.HTTP_204_NO_CONTENT)
async def delete_contact(contact_id: uuid.UUID, session: SessionDep, auth: WriteAuth) -> Response:
    await service.delete_contact(session, auth.tenant_id, contact_id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)
