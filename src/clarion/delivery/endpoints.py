from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, Query, Request, Response

from clarion.db import SessionDep
from clarion.delivery import outbox_service
from clarion.delivery.schemas import OutboxEntryRead, OutboxPage
from clarion.tenancy.deps import ReadAuth

router = APIRouter(prefix="/outbox", tags=["outbox"])


@router.get("", response_model=OutboxPage)
async def list_outbox(
    session: SessionDep,
    auth: ReadAuth,
    campaign_id: uuid.UUID | None = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    cursor: str | None = None,
) -> OutboxPage:
    """Messages the built-in outbox channel wrote, newest first."""
    page = await outbox_service.list_outbox(session, auth.tenant_id, limit=limit, cursor=cursor,
                                            campaign_id=campaign_id)
    return OutboxPage(items=[OutboxEntryRead.of(row) for row in page.rows], next_cursor=page.next_cursor)


@router.get("/{entry_id}/raw", response_class=Response,
            responses={200: {"content": {"message/rfc822": {}}, "description": "The RFC 5322 bytes"}})
async def outbox_raw(entry_id: uuid.UUID, request: Request, session: SessionDep, auth: ReadAuth) -> Response:
    data_dir = request.app.state.settings.data_dir
    raw = await outbox_service.read_raw(session, auth.tenant_id, entry_id, data_dir)
    return Response(raw, media_type="message/rfc822",
                    headers={"Content-Disposition": f'inline; filename="{entry_id}.eml"'})
