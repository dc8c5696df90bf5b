"""Sending on request: process-daily (seed 002) and test sends."""

from __future__ import annotations

import uuid

from fastapi import APIRouter, Request

from clarion.db import SessionDep
from clarion.delivery import dispatch_service, send_accounting
from clarion.delivery import tasks as _tasks  # noqa: F401 - the route table's import registers the dispatch loop
from clarion.delivery.sending_schemas import ProcessDailyResult, SendLimits, TestSendRequest, TestSendResult
from clarion.tenancy.deps import ReadAuth, WriteAuth

router = APIRouter(tags=["sending"])


@router.post("/process-daily", response_model=ProcessDailyResult)
async def process_daily(request: Request, session: SessionDep, auth: WriteAuth) -> ProcessDailyResult:
    """Send what is due now of the caller's running campaigns, once (for deployments driven by cron)."""
    # The request's own transaction (authentication may have written) ends before any provider is talked to.
    await session.commit()
    return await dispatch_service.process_daily(
        request.app.state.db, request.app.state.settings, auth.tenant_id
    )


@router.post("/campaigns/{campaign_id}/test", response_model=TestSendResult)
async def send_test(
    campaign_id: uuid.UUID, data: TestSendRequest, request: Request, session: SessionDep, auth: WriteAuth
) -> TestSendResult:
    """Send the campaign's rendered message, subject prefixed "[TEST] ", to up to 20 addresses; recipients and
    stats are not touched."""
    await session.commit()
    return await dispatch_service.send_test(
        request.app.state.db, request.app.state.settings, auth.tenant_id, campaign_id, data
    )


@router.get("/campaigns/{campaign_id}/send-limits", response_model=SendLimits)
async def send_limits(campaign_id: uuid.UUID, request: Request, session: SessionDep, auth: ReadAuth) -> SendLimits:
    """What limits the campaign's sending now: its daily limit, its channel account's messaging-limit tier (shared
    with every campaign on that account), its budget; `effective_daily_limit` is the daily limit the tier allows."""
    return await send_accounting.send_limits(session, auth.tenant_id, campaign_id,
                                             secret=request.app.state.secret_key,
                                             data_dir=request.app.state.settings.data_dir)
