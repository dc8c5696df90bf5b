"""Every query about segments: the segments themselves, static members, and the contacts a segment selects."""

from __future__ import annotations

import uuid
from typing import Any

from sqlalchemy import ColumnElement, Select, delete, exists, func, insert, literal, select

from clarion.kit.clock import utcnow
from clarion.kit.pagination import PageRows, keyset_page
from clarion.kit.repository import TenantRepository, in_chunks
from clarion.models import Contact, Segment, SegmentMember


class SegmentRepo(TenantRepository[Segment]):
    model = Segment
    label = "segment"

    async def list_page(self, *, limit: int, cursor: str | None) -> PageRows[Segment]:
        return await keyset_page(self.session, self.scoped(), Segment.id, limit=limit, cursor=cursor,
                                 key_type=uuid.UUID)


class SegmentMemberRepo:
    """Members of static segments. Not a TenantRepository (no own id), but every statement carries tenant_id."""

    def __init__(self, session: Any, tenant_id: uuid.UUID) -> None:
        self.session = session
        self.tenant_id = tenant_id

    async def existing_contact_ids(self, ids: list[uuid.UUID]) -> set[uuid.UUID]:
        found: set[uuid.UUID] = set()
        for chunk in in_chunks(ids):
            rows = await self.session.execute(
                select(Contact.id).where(Contact.tenant_id == self.tenant_id, Contact.id.in_(chunk)))
            found.update(rows.scalars().all())
        return found

    async def add(self, segment_id: uuid.UUID, contact_ids: list[uuid.UUID]) -> int:
        """INSERT … SELECT of the tenant's contacts among `contact_ids` that are not members yet; returns how many."""
        added = 0
        now = utcnow()
        for chunk in in_chunks(contact_ids):
            already = exists().where(SegmentMember.segment_id == segment_id,
                                     SegmentMember.contact_id == Contact.id)
            source = select(
                literal(self.tenant_id, SegmentMember.tenant_id.type),
                literal(segment_id, SegmentMember.segment_id.type),
                Contact.id,
                literal(now, SegmentMember.added_at.type),
            ).where(Contact.tenant_id == self.tenant_id, Contact.id.in_(chunk), ~already)
            # RETURNING rather than rowcount: psycopg reports no rowcount for INSERT … SELECT here.
            result = await self.session.execute(
                insert(SegmentMember).from_select(["tenant_id", "segment_id", "contact_id", "added_at"], source)
                .returning(SegmentMember.contact_id))
            added += len(result.all())
        return added

    async def remove(self, segment_id: uuid.UUID, contact_ids: list[uuid.UUID]) -> set[uuid.UUID]:
        """Delete those memberships; returns the ids that were members."""
        removed: set[uuid.UUID] = set()
        for chunk in in_chunks(contact_ids):
            scope = (SegmentMember.tenant_id == self.tenant_id, SegmentMember.segment_id == segment_id,
                     SegmentMember.contact_id.in_(chunk))
            rows = await self.session.execute(select(SegmentMember.contact_id).where(*scope))
            members = set(rows.scalars().all())
            if members:
                await self.session.execute(delete(SegmentMember).where(*scope))
            removed |= members
        return removed


class AudienceRepo:
    """The contacts a segment or a filter selects, always within one tenant."""

    def __init__(self, session: Any, tenant_id: uuid.UUID) -> None:
        self.session = session
        self.tenant_id = tenant_id

    def members_of(self, segment_id: uuid.UUID) -> ColumnElement[bool]:
        members = select(SegmentMember.contact_id).where(SegmentMember.tenant_id == self.tenant_id,
                                                         SegmentMember.segment_id == segment_id)
        return Contact.id.in_(members)

    def address_select(self, condition: ColumnElement[bool] | None) -> Select[Any]:
        stmt = select(Contact.id, Contact.email, Contact.phone).where(Contact.tenant_id == self.tenant_id)
        return stmt if condition is None else stmt.where(condition)

    async def count(self, condition: ColumnElement[bool] | None) -> int:
        inner = self.address_select(condition).with_only_columns(Contact.id).subquery()
        return int((await self.session.execute(select(func.count()).select_from(inner))).scalar_one())

    async def contacts_page(self, condition: ColumnElement[bool] | None, *, limit: int,
                            cursor: str | None) -> PageRows[Contact]:
        stmt = select(Contact).where(Contact.tenant_id == self.tenant_id)
        if condition is not None:
            stmt = stmt.where(condition)
        return await keyset_page(self.session, stmt, Contact.id, limit=limit, cursor=cursor, key_type=uuid.UUID)
