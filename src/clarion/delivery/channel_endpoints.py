from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, Query, Request, Response, status

from clarion.db import SessionDep
from clarion.delivery import channel_service as service
from clarion.delivery.channel_schemas import (
    Channel,
    ChannelCheck,
    ChannelCreate,
    ChannelPage,
    ChannelRead,
    ChannelUpdate,
)
from clarion.tenancy.deps import ReadAuth, WriteAuth

router = APIRouter(prefix="/channels", tags=["channels"])


def _secret(request: Request) -> str:
    return request.app.state.secret_key


@router.post("", response_model=ChannelRead, status_code=status.HTTP_201_CREATED)
async def create_channel(data: ChannelCreate, request: Request, session: SessionDep,
                         auth: WriteAuth) -> ChannelRead:
    """Add a provider account for a channel. Secret fields of `config` are write-only: stored encrypted,
    shown masked."""
    row = await service.create_channel(session, auth.tenant_id, data, secret=_secret(request))
    return service.view(row, secret=_secret(request))


@router.get("", response_model=ChannelPage)
async def list_channels(
    request: Request,
    session: SessionDep,
    auth: ReadAuth,
    channel: Channel | None = None,
    enabled: bool | None = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    cursor: str | None = None,
) -> ChannelPage:
    page = await service.list_channels(session, auth.tenant_id, channel=channel, enabled=enabled, limit=limit,
                                       cursor=cursor)
    return ChannelPage(items=[service.view(row, secret=_secret(request)) for row in page.rows],
                       next_cursor=page.next_cursor)


@router.get("/{channel_id}", response_model=ChannelRead)
async def get_channel(channel_id: uuid.UUID, request: Request, session: SessionDep, auth: ReadAuth) -> ChannelRead:
    return service.view(await service.get_channel(session, auth.tenant_id, channel_id), secret=_secret(request))


@router.patch("/{channel_id}", response_model=ChannelRead)
async def update_channel(channel_id: uuid.UUID, data: ChannelUpdate, request: Request, session: SessionDep,
                         auth: WriteAuth) -> ChannelRead:
    """Change the fields given. `config` merges into the stored one; a secret left out or sent back masked
    keeps its stored value."""
    row = await service.update_channel(session, auth.tenant_id, channel_id, data, secret=_secret(request))
    return service.view(row, secret=_secret(request))


@router.delete("/{channel_id}", status_code=status.HTTP_204_NO_CONTENT)
async def delete_channel(channel_id: uuid.UUID, session: SessionDep, auth: WriteAuth) -> Response:
    await service.delete_channel(session, auth.tenant_id, channel_id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.post("/{channel_id}/check", response_model=ChannelCheck)
async def check_channel(channel_id: uuid.UUID, request: Request, session: SessionDep,
                        auth: WriteAuth) -> ChannelCheck:
    """Try the settings against the real service without sending; 422 with the provider's message if they
    do not work."""
    settings = request.app.state.settings
    return await service.check_channel(session, auth.tenant_id, channel_id, secret=_secret(request),
                                       data_dir=settings.data_dir, public_base_url=settings.base_url)
