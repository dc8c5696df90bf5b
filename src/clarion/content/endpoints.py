from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, Query, Request, Response, status

from clarion.content import service
from clarion.content.schemas import (
    Channel,
    Preview,
    PreviewRequest,
    TemplateCreate,
    TemplatePage,
    TemplateRead,
    TemplateUpdate,
)
from clarion.db import SessionDep
from clarion.tenancy.deps import ReadAuth, WriteAuth

router = APIRouter(prefix="/templates", tags=["templates"])


@router.post("", response_model=TemplateRead, status_code=status.HTTP_201_CREATED)
async def create_template(data: TemplateCreate, session: SessionDep, auth: WriteAuth) -> TemplateRead:
    return TemplateRead.of(await service.create_template(session, auth.tenant_id, data))


@router.get("", response_model=TemplatePage)
async def list_templates(
    session: SessionDep,
    auth: ReadAuth,
    channel: Channel | None = None,
    is_active: bool | None = None,
    q: Annotated[str | None, Query(description="Matches the name")] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    cursor: str | None = None,
) -> TemplatePage:
    page = await service.list_templates(session, auth.tenant_id, channel=channel, is_active=is_active, q=q,
                                        limit=limit, cursor=cursor)
    return TemplatePage(items=[TemplateRead.of(t) for t in page.rows], next_cursor=page.next_cursor)


@router.get("/{template_id}", response_model=TemplateRead)
async def get_template(template_id: uuid.UUID, session: SessionDep, auth: ReadAuth) -> TemplateRead:
    return TemplateRead.of(await service.get_template(session, auth.tenant_id, template_id))


@router.put("/{template_id}", response_model=TemplateRead)
async def update_template(template_id: uuid.UUID, data: TemplateUpdate, session: SessionDep,
                          auth: WriteAuth) -> TemplateRead:
    return TemplateRead.of(await service.update_template(session, auth.tenant_id, template_id, data))


@router.delete("/{template_id}", status_code=status.HTTP_204_NO_CONTENT)
async def delete_template(template_id: uuid.UUID, session: SessionDep, auth: WriteAuth) -> Response:
    await service.delete_template(session, auth.tenant_id, template_id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.post("/{template_id}/preview", response_model=Preview)
async def preview_template(template_id: uuid.UUID, data: PreviewRequest, request: Request, session: SessionDep,
                           auth: ReadAuth) -> Preview:
    """Render the template for a stored contact or a sample, with preview unsubscribe / view-in-browser links."""
    return await service.preview_template(session, auth.tenant_id, template_id, data,
                                          base_url=request.app.state.settings.base_url)
