"""The one route table: every domain's router, mounted under /api/v1."""

from __future__ import annotations

from fastapi import APIRouter

from clarion.audience.endpoints import router as contacts_router
from clarion.tenancy.endpoints import router as tenancy_router

api_router = APIRouter(prefix="/api/v1")
api_router.include_router(tenancy_router)
api_router.include_router(contacts_router)
