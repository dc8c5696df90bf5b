from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, Query, Response, status

from clarion.audience.schemas import ContactPage, ContactRead
from clarion.audience.segments import service
from clarion.audience.segments.schemas import (
    FilterPreview,
    FilterPreviewRequest,
    MemberIds,
    MembersAdded,
    MembersRemoved,
    SegmentCount,
    SegmentCreate,
    SegmentPage,
    SegmentRead,
    SegmentUpdate,
)
from clarion.db import SessionDep
from clarion.tenancy.deps import ReadAuth, WriteAuth

router = APIRouter(prefix="/segments", tags=["segments"])


@router.post("", response_model=SegmentRead, status_code=status.HTTP_201_CREATED)
async def create_segment(data: SegmentCreate, session: SessionDep, auth: WriteAuth) -> object:
    return await service.create_segment(session, auth.tenant_id, data)


@router.get("", response_model=SegmentPage)
async def list_segments(session: SessionDep, auth: ReadAuth, limit: Annotated[int, Query(ge=1, le=500)] = 50,
                        cursor: str | None = None) -> SegmentPage:
    page = await service.list_segments(session, auth.tenant_id, limit=limit, cursor=cursor)
    return SegmentPage(items=[SegmentRead.model_validate(s) for s in page.rows], next_cursor=page.next_cursor)


@router.post("/preview", response_model=FilterPreview)
async def preview_filter(data: FilterPreviewRequest, session: SessionDep, auth: ReadAuth) -> FilterPreview:
    """Count and list the contacts a filter (or target_audience) selects, without saving a segment."""
    tree, count, page = await service.preview_filter(session, auth.tenant_id, data)
    return FilterPreview(count=count, filter=tree, items=[ContactRead.of(c) for c in page.rows],
                         next_cursor=page.next_cursor)


@router.get("/{segment_id}", response_model=SegmentRead)
async def get_segment(segment_id: uuid.UUID, session: SessionDep, auth: ReadAuth) -> object:
    return await service.get_segment(session, auth.tenant_id, segment_id)


@router.patch("/{segment_id}", response_model=SegmentRead)
async def update_segment(segment_id: uuid.UUID, data: SegmentUpdate, session: SessionDep,
                         auth: WriteAuth) -> object:
    return await service.update_segment(session, auth.tenant_id, segment_id, data)


@router.delete("/{segment_id}", status_code=status.HTTP_204_NO_CONTENT)
async def delete_segment(segment_id: uuid.UUID, session: SessionDep, auth: WriteAuth) -> Response:
    await service.delete_segment(session, auth.tenant_id, segment_id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.post("/{segment_id}/members", response_model=MembersAdded)
async def add_members(segment_id: uuid.UUID, data: MemberIds, session: SessionDep, auth: WriteAuth) -> MembersAdded:
    return await service.add_members(session, auth.tenant_id, segment_id, data.contact_ids)


@router.delete("/{segment_id}/members", response_model=MembersRemoved)
async def remove_members(segment_id: uuid.UUID, data: MemberIds, session: SessionDep,
                         auth: WriteAuth) -> MembersRemoved:
    return await service.remove_members(session, auth.tenant_id, segment_id, data.contact_ids)


@router.get("/{segment_id}/count", response_model=SegmentCount)
async def count_segment(segment_id: uuid.UUID, session: SessionDep, auth: ReadAuth) -> SegmentCount:
    return SegmentCount(count=await service.count_segment(session, auth.tenant_id, segment_id))


@router.get("/{segment_id}/contacts", response_model=ContactPage)
async def segment_contacts(segment_id: uuid.UUID, session: SessionDep, auth: ReadAuth,
                           limit: Annotated[int, Query(ge=1, le=500)] = 50,
                           cursor: str | None = None) -> ContactPage:
    page = await service.segment_contacts(session, auth.tenant_id, segment_id, limit=limit, cursor=cursor)
    return ContactPage(items=[ContactRead.of(c) for c in page.rows], next_cursor=page.next_cursor)
