"""Segments: dynamic (a filter tree evaluated whenever used) and static (explicit members).

Other domains build their audiences with `audience_select`, and accept filters and seed 002's
`target_audience` through `validate_filter` and `target_audience_to_filter`.
"""

from __future__ import annotations

import uuid
from typing import Any

from sqlalchemy import ColumnElement, Select
from sqlalchemy.ext.asyncio import AsyncSession

from clarion.audience.segments import filters
from clarion.audience.segments.repository import AudienceRepo, SegmentMemberRepo, SegmentRepo
from clarion.audience.segments.schemas import (
    FilterPreviewRequest,
    MembersAdded,
    MembersRemoved,
    SegmentCreate,
    SegmentUpdate,
)
from clarion.errors import Conflict, Invalid, field_error
from clarion.kit.pagination import PageRows
from clarion.kit.repository import conflict_on_violation
from clarion.models import Contact, Segment

# --- filters ---------------------------------------------------------------------------------------------

def validate_filter(tree: dict[str, Any], *, path: str = "filter") -> dict[str, Any]:
    """The normalised filter tree, or Invalid (422) whose message starts with the offending node's path."""
    return filters.validate_tree(tree, path)


def target_audience_to_filter(target: dict[str, Any], *, path: str = "target_audience") -> dict[str, Any]:
    """Seed 002's target_audience as a validated filter tree: every key but `tags` is attribute equality
    (a list value means any of them), `tags` means the contact has all of those tags."""
    if not isinstance(target, dict):
        raise Invalid(f"{path}: must be an object such as {{\"city\": \"New York\", \"tags\": [\"fashion\"]}}",
                      errors=[field_error(["body", path], "must be an object", "filter_error")])
    if not target:
        raise Invalid(f"{path}: name at least one criterion",
                      errors=[field_error(["body", path], "name at least one criterion", "filter_error")])
    leaves: list[dict[str, Any]] = []
    for key, value in target.items():
        where = f"{path}.{key}"
        if key == "tags":
            tags = [value] if isinstance(value, str) else value
            leaf: dict[str, Any] = {"field": "tags", "op": "has_all", "value": tags}
        elif isinstance(value, list):
            leaf = {"field": f"attributes.{key}", "op": "in", "value": value}
        else:
            leaf = {"field": f"attributes.{key}", "op": "eq", "value": value}
        leaves.append(filters.validate_tree(leaf, where))
    return {"all": leaves}


def _tree_of(filter_: Any, target_audience: Any, *, required: bool) -> dict[str, Any] | None:
    if filter_ is not None and target_audience is not None:
        raise Invalid("give either filter or target_audience, not both",
                      errors=[field_error(["body", "target_audience"], "filter is already given")])
    if filter_ is not None:
        return validate_filter(filter_)
    if target_audience is not None:
        return target_audience_to_filter(target_audience)
    if required:
        raise Invalid("a dynamic segment needs a filter or a target_audience",
                      errors=[field_error(["body", "filter"], "required for a dynamic segment", "missing")])
    return None


# --- segments --------------------------------------------------------------------------------------------

async def create_segment(session: AsyncSession, tenant_id: uuid.UUID, data: SegmentCreate) -> Segment:
    if data.kind == "static":
        if data.filter is not None or data.target_audience is not None:
            raise Invalid("a static segment has members, not a filter; use kind 'dynamic' for a filter",
                          errors=[field_error(["body", "filter"], "not allowed for a static segment")])
        tree = None
    else:
        tree = _tree_of(data.filter, data.target_audience, required=True)
    segment = SegmentRepo(session, tenant_id).add(
        Segment(name=data.name, description=data.description, kind=data.kind, filter=tree))
    await session.flush()
    return segment


async def get_segment(session: AsyncSession, tenant_id: uuid.UUID, segment_id: uuid.UUID) -> Segment:
    return await SegmentRepo(session, tenant_id).get(segment_id)


async def list_segments(session: AsyncSession, tenant_id: uuid.UUID, *, limit: int,
                        cursor: str | None) -> PageRows[Segment]:
    return await SegmentRepo(session, tenant_id).list_page(limit=limit, cursor=cursor)


async def update_segment(session: AsyncSession, tenant_id: uuid.UUID, segment_id: uuid.UUID,
                         data: SegmentUpdate) -> Segment:
    segment = await get_segment(session, tenant_id, segment_id)
    given = data.model_fields_set
    if "kind" in given and data.kind != segment.kind:
        raise Invalid(f"a segment's kind cannot change (this one is {segment.kind}); create a new segment",
                      errors=[field_error(["body", "kind"], f"must stay {segment.kind}")])
    if "name" in given:
        if data.name is None:
            raise Invalid("name cannot be null", errors=[field_error(["body", "name"], "cannot be null")])
        segment.name = data.name
    if "description" in given:
        segment.description = data.description
    changes_filter = data.filter is not None or data.target_audience is not None
    if changes_filter:
        if segment.kind == "static":
            raise Invalid("a static segment has members, not a filter",
                          errors=[field_error(["body", "filter"], "not allowed for a static segment")])
        segment.filter = _tree_of(data.filter, data.target_audience, required=True)
    elif segment.kind == "dynamic" and ("filter" in given or "target_audience" in given):
        raise Invalid("a dynamic segment needs a filter; it cannot be removed",
                      errors=[field_error(["body", "filter"], "cannot be null for a dynamic segment")])
    await session.flush()
    return segment


async def delete_segment(session: AsyncSession, tenant_id: uuid.UUID, segment_id: uuid.UUID) -> None:
    repo = SegmentRepo(session, tenant_id)
    await repo.get(segment_id)
    # campaigns.segment_id is ON DELETE RESTRICT: a campaign still targeting the segment makes this a 409.
    async with conflict_on_violation(session, f"segment {segment_id} is used by a campaign; change that "
                                     "campaign's audience or delete the campaign first", code="segment_in_use"):
        await repo.remove_by_id(segment_id)


# --- static members --------------------------------------------------------------------------------------

async def _static_segment(session: AsyncSession, tenant_id: uuid.UUID, segment_id: uuid.UUID) -> Segment:
    segment = await get_segment(session, tenant_id, segment_id)
    if segment.kind != "static":
        raise Conflict("only a static segment has explicit members; this one is dynamic (its filter decides)")
    return segment


async def add_members(session: AsyncSession, tenant_id: uuid.UUID, segment_id: uuid.UUID,
                      contact_ids: list[uuid.UUID]) -> MembersAdded:
    await _static_segment(session, tenant_id, segment_id)
    wanted = list(dict.fromkeys(contact_ids))
    members = SegmentMemberRepo(session, tenant_id)
    known = await members.existing_contact_ids(wanted)
    added = await members.add(segment_id, [i for i in wanted if i in known])
    return MembersAdded(added=added, already_members=len(known) - added,
                        unknown=[i for i in wanted if i not in known])


async def remove_members(session: AsyncSession, tenant_id: uuid.UUID, segment_id: uuid.UUID,
                         contact_ids: list[uuid.UUID]) -> MembersRemoved:
    await _static_segment(session, tenant_id, segment_id)
    wanted = list(dict.fromkeys(contact_ids))
    removed = await SegmentMemberRepo(session, tenant_id).remove(segment_id, wanted)
    return MembersRemoved(removed=len(removed), not_members=[i for i in wanted if i not in removed])


# --- audiences -------------------------------------------------------------------------------------------

def _segment_condition(tenant_id: uuid.UUID, segment: Segment, audience: AudienceRepo) -> ColumnElement[bool]:
    if segment.kind == "static":
        return audience.members_of(segment.id)
    # Stored trees were validated on write; validating again keeps an old tree from compiling into surprises.
    return filters.compile_tree(filters.validate_tree(segment.filter, "segment.filter"))


async def _condition(session: AsyncSession, tenant_id: uuid.UUID, audience: AudienceRepo, *,
                     segment_id: uuid.UUID | None, filter: dict[str, Any] | None) -> ColumnElement[bool] | None:
    if segment_id is not None and filter is not None:
        raise Invalid("give either a segment or a filter, not both",
                      errors=[field_error(["body", "filter"], "segment_id is already given")])
    if segment_id is not None:
        return _segment_condition(tenant_id, await get_segment(session, tenant_id, segment_id), audience)
    if filter is not None:
        return filters.compile_tree(validate_filter(filter))
    return None


async def audience_select(session: AsyncSession, tenant_id: uuid.UUID, *, segment_id: uuid.UUID | None = None,
                          filter: dict[str, Any] | None = None) -> Select[Any]:
    """`SELECT contacts.id, contacts.email, contacts.phone` of the tenant's contacts in the segment (its filter
    or its members) or matching the filter; all the tenant's contacts when neither is given. Composable:
    add `.where(...)` and use it in INSERT … SELECT. Unknown segment → NotFound."""
    audience = AudienceRepo(session, tenant_id)
    condition = await _condition(session, tenant_id, audience, segment_id=segment_id, filter=filter)
    return audience.address_select(condition)


async def count_segment(session: AsyncSession, tenant_id: uuid.UUID, segment_id: uuid.UUID) -> int:
    audience = AudienceRepo(session, tenant_id)
    return await audience.count(await _condition(session, tenant_id, audience, segment_id=segment_id, filter=None))


async def segment_contacts(session: AsyncSession, tenant_id: uuid.UUID, segment_id: uuid.UUID, *, limit: int,
                           cursor: str | None) -> PageRows[Contact]:
    audience = AudienceRepo(session, tenant_id)
    condition = await _condition(session, tenant_id, audience, segment_id=segment_id, filter=None)
    return await audience.contacts_page(condition, limit=limit, cursor=cursor)


async def preview_filter(session: AsyncSession, tenant_id: uuid.UUID,
                         data: FilterPreviewRequest) -> tuple[dict[str, Any], int, PageRows[Contact]]:
    """Try a filter before saving it: the normalised tree, how many contacts match, and the first of them."""
    tree = _tree_of(data.filter, data.target_audience, required=True)
    assert tree is not None
    audience = AudienceRepo(session, tenant_id)
    condition = filters.compile_tree(tree)
    page = await audience.contacts_page(condition, limit=data.limit, cursor=data.cursor)
    return tree, await audience.count(condition), page
