from __future__ import annotations

import uuid

from sqlalchemy import func, update

from clarion.kit.pagination import PageRows, keyset_page
from clarion.kit.repository import TenantRepository
from clarion.kit.sqljson import like_escape
from clarion.models import Template


class TemplateRepo(TenantRepository[Template]):
    model = Template
    label = "template"

    async def list_page(self, *, channel: str | None, is_active: bool | None, q: str | None, limit: int,
                        cursor: str | None) -> PageRows[Template]:
        stmt = self.scoped()
        if channel is not None:
            stmt = stmt.where(Template.channel == channel)
        if is_active is not None:
            stmt = stmt.where(Template.is_active == is_active)
        if q:
            stmt = stmt.where(func.lower(Template.name).like(f"%{like_escape(q.lower())}%", escape="\\"))
        return await keyset_page(self.session, stmt, Template.id, limit=limit, cursor=cursor, key_type=uuid.UUID)

    async def clear_default(self, channel: str, *, except_id: uuid.UUID) -> None:
        """Unmark every other default template of `channel`: a channel has at most one default."""
        await self.session.execute(
            update(Template)
            .where(Template.tenant_id == self.tenant_id, Template.channel == channel,
                   Template.is_default.is_(True), Template.id != except_id)
            .values(is_default=False)
            .execution_options(synchronize_session="fetch")
        )
