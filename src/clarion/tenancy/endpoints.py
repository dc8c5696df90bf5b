from __future__ import annotations

import uuid

from fastapi import APIRouter, status

from clarion.db import SessionDep
from clarion.tenancy import service
from clarion.tenancy.deps import ReadAuth, WriteAuth
from clarion.tenancy.schemas import ApiKeyCreate, ApiKeyCreated, ApiKeyRead, TenantRead, TenantUpdate

router = APIRouter(tags=["tenancy"])


@router.get("/tenant", response_model=TenantRead)
async def read_tenant(session: SessionDep, auth: ReadAuth) -> object:
    return await service.get_tenant(session, auth.tenant_id)


@router.patch("/tenant", response_model=TenantRead)
async def update_tenant(data: TenantUpdate, session: SessionDep, auth: WriteAuth) -> object:
    return await service.update_tenant(session, auth.tenant_id, data)


@router.get("/api-keys", response_model=list[ApiKeyRead])
async def list_api_keys(session: SessionDep, auth: ReadAuth) -> object:
    return await service.list_api_keys(session, auth.tenant_id)


@router.post("/api-keys", response_model=ApiKeyCreated, status_code=status.HTTP_201_CREATED)
async def create_api_key(data: ApiKeyCreate, session: SessionDep, auth: WriteAuth) -> object:
    key, secret = await service.create_api_key(session, auth.tenant_id, data)
    return ApiKeyCreated.model_validate({**ApiKeyRead.model_validate(key).model_dump(), "key": secret})


@router.delete("/api-keys/{key_id}", response_model=ApiKeyRead)
async def revoke_api_key(key_id: uuid.UUID, session: SessionDep, auth: WriteAuth) -> object:
    return await service.revoke_api_key(session, auth.tenant_id, key_id)
