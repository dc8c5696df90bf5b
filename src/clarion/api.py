"""The one route table: every domain's router, mounted under /api/v1."""

from __future__ import annotations

from fastapi import APIRouter

from clarion.audience.endpoints import router as contacts_router
from clarion.audience.push_endpoints import router as push_router
from clarion.audience.segments.endpoints import router as segments_router
from clarion.audience.suppression_endpoints import router as suppressions_router
from clarion.campaign.endpoints import router as campaigns_router
from clarion.content.endpoints import router as templates_router
from clarion.delivery.channel_endpoints import router as channels_router
from clarion.delivery.endpoints import router as outbox_router
from clarion.delivery.sending_endpoints import router as sending_router
from clarion.tenancy.endpoints import router as tenancy_router
from clarion.tracking.endpoints import router as tracking_router
from clarion.tracking.webhooks_endpoints import router as webhook_calls_router

api_router = APIRouter(prefix="/api/v1")
for router in (tenancy_router, contacts_router, segments_router, templates_router, campaigns_router):
    api_router.include_router(router)
api_router.include_router(outbox_router)
api_router.include_router(channels_router)
api_router.include_router(tracking_router)
api_router.include_router(sending_router)
api_router.include_router(suppressions_router)
api_router.include_router(webhook_calls_router)
api_router.include_router(push_router)
