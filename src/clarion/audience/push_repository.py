"""Every query of contacts' Web Push subscriptions."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, and_, delete, exists, select, update

from clarion.kit.pagination import PageRows, keyset_page
from clarion.kit.repository import TenantRepository, in_chunks
from clarion.models import Contact, PushSubscription


def has_push_subscription() -> Any:
    """Condition on Contact: it has at least one browser subscription (an index probe on contact_id)."""
    return exists().where(PushSubscription.contact_id == Contact.id)


class PushSubscriptionRepo(TenantRepository[PushSubscription]):
    model = PushSubscription
    label = "push subscription"

    async def find_by_endpoint(self, endpoint: str) -> PushSubscription | None:
        result = await self.session.execute(self.scoped().where(PushSubscription.endpoint == endpoint))
        return result.scalar_one_or_none()

    async def page(self, *, contact_id: uuid.UUID | None, limit: int, cursor: str | None) -> PageRows[PushSubscription]:
        stmt = self.scoped()
        if contact_id is not None:
            stmt = stmt.where(PushSubscription.contact_id == contact_id)
        return await keyset_page(self.session, stmt, PushSubscription.id, limit=limit, cursor=cursor,
                                 key_type=uuid.UUID)

    async def targets(self, contact_ids: list[uuid.UUID]) -> list[tuple[uuid.UUID, str, str, str]]:
        """(contact_id, endpoint, p256dh, auth) of every subscription of the given contacts."""
        columns = (PushSubscription.contact_id, PushSubscription.endpoint, PushSubscription.p256dh,
                   PushSubscription.auth)
        found: list[tuple[uuid.UUID, str, str, str]] = []
        for chunk in in_chunks(contact_ids):
            stmt = (self.scoped(select(*columns))
                    .where(PushSubscription.contact_id.in_(chunk))
                    .order_by(PushSubscription.contact_id, PushSubscription.id))
            found.extend(tuple(row) for row in (await self.session.execute(stmt)).all())  # type: ignore[misc]
        return found

    def _with_endpoints(self, endpoints: list[str]) -> Iterator[ColumnElement[bool]]:
        """This tenant's subscriptions with one of `endpoints`: one condition per chunk of them."""
        for chunk in in_chunks(endpoints):
            yield and_(PushSubscription.tenant_id == self.tenant_id, PushSubscription.endpoint.in_(chunk))

    async def remove_endpoints(self, endpoints: list[str]) -> int:
        removed = 0
        for condition in self._with_endpoints(endpoints):
            result = await self.session.execute(
                delete(PushSubscription).where(condition).execution_options(synchronize_session=False))
            removed += int(result.rowcount or 0)
        return removed

    async def mark_success(self, endpoints: list[str], at: datetime) -> None:
        for condition in self._with_endpoints(endpoints):
            await self.session.execute(update(PushSubscription).where(condition).values(last_success_at=at)
                                       .execution_options(synchronize_session=False))
