from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, Query, Response, status

from clarion.audience import suppression_service as service
from clarion.audience.schemas import Channel
from clarion.audience.suppression_schemas import (
    SuppressionCheck,
    SuppressionCheckResult,
    SuppressionCreate,
    SuppressionPage,
    SuppressionRead,
    SuppressionsAdded,
)
from clarion.db import SessionDep
from clarion.tenancy.deps import ReadAuth, WriteAuth

router = APIRouter(prefix="/suppressions", tags=["suppressions"])


@router.post("", response_model=SuppressionsAdded)
async def add_suppressions(data: SuppressionCreate, session: SessionDep, auth: WriteAuth) -> SuppressionsAdded:
    """Suppress one or many addresses on a channel. Invalid addresses are listed in `invalid` (422 only when
    none is valid); addresses already suppressed keep their entry."""
    return await service.add_suppressions(session, auth.tenant_id, data)


@router.get("", response_model=SuppressionPage)
async def list_suppressions(
    session: SessionDep,
    auth: ReadAuth,
    channel: Channel | None = None,
    q: Annotated[str | None, Query(description="Part of the address")] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    cursor: str | None = None,
) -> SuppressionPage:
    page = await service.list_suppressions(session, auth.tenant_id, channel=channel, q=q, limit=limit, cursor=cursor)
    return SuppressionPage(items=[SuppressionRead.model_validate(s) for s in page.rows], next_cursor=page.next_cursor)


@router.post("/check", response_model=SuppressionCheckResult)
async def check_suppression(data: SuppressionCheck, session: SessionDep, auth: ReadAuth) -> SuppressionCheckResult:
    """Is this address suppressed on the channel (and why)?"""
    return await service.check(session, auth.tenant_id, data)


@router.delete("/{suppression_id}", status_code=status.HTTP_204_NO_CONTENT)
async def delete_suppression(suppression_id: uuid.UUID, session: SessionDep, auth: WriteAuth) -> Response:
    await service.delete_suppression(session, auth.tenant_id, suppression_id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)
