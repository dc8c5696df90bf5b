"""Every query of the suppression list."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import exists, false, func

from clarion.kit.ids import new_id
from clarion.kit.pagination import PageRows, keyset_page
from clarion.kit.repository import TenantRepository, dialect_insert, in_chunks
from clarion.kit.sqljson import like_escape
from clarion.models import Contact, Suppression

# The contact column that holds a channel's address; channels not listed have no address on the contact.
CONTACT_ADDRESS = {"email": Contact.email, "sms": Contact.phone, "whatsapp": Contact.phone,
                   "telegram": Contact.telegram_chat_id}



def address_suppressed(channel: str) -> Any:
    """Condition on Contact: its address for `channel` is on its tenant's suppression list (correlated EXISTS
    that the UNIQUE(tenant_id, channel, address) index answers)."""
    column = CONTACT_ADDRESS.get(channel)
    if column is None:
        return false()
    return exists().where(
        Suppression.tenant_id == Contact.tenant_id,
        Suppression.channel == channel,
        Suppression.address == column,
    )


class SuppressionRepo(TenantRepository[Suppression]):
    model = Suppression
    label = "suppression"

    def _insert(self) -> Any:
        """INSERT … ON CONFLICT DO NOTHING: same SQL on both databases, built by each dialect's insert()."""
        return dialect_insert(self.session, Suppression.__table__)

    async def insert_missing(self, channel: str, addresses: list[str], *, reason: str, note: str | None,
                             at: datetime) -> int:
        """Add the addresses not yet on the list (multi-row INSERT, duplicates ignored); returns how many."""
        added = 0
        for chunk in in_chunks(addresses):
            rows = [{"id": new_id(), "tenant_id": self.tenant_id, "channel": channel, "address": address,
                     "reason": reason, "note": note, "created_at": at}
                    for address in chunk]
            stmt = (self._insert().values(rows)
                    .on_conflict_do_nothing(index_elements=["tenant_id", "channel", "address"]))
            result = await self.session.execute(stmt, execution_options={"preserve_rowcount": True})
            added += int(result.rowcount or 0)
        return added

    async def of_addresses(self, channel: str, addresses: list[str]) -> list[Suppression]:
        found: list[Suppression] = []
        for chunk in in_chunks(addresses):
            stmt = self.scoped().where(Suppression.channel == channel, Suppression.address.in_(chunk))
            found.extend((await self.session.execute(stmt)).scalars().all())
        return found

    async def find_address(self, channel: str, address: str) -> Suppression | None:
        stmt = self.scoped().where(Suppression.channel == channel, Suppression.address == address)
        return (await self.session.execute(stmt)).scalar_one_or_none()

    async def list_page(self, *, channel: str | None, q: str | None, limit: int,
                        cursor: str | None) -> PageRows[Suppression]:
        stmt = self.scoped()
        if channel:
            stmt = stmt.where(Suppression.channel == channel)
        if q:
            pattern = f"%{like_escape(q.lower())}%"
            stmt = stmt.where(func.lower(Suppression.address).like(pattern, escape="\\"))
        return await keyset_page(self.session, stmt, Suppression.id, limit=limit, cursor=cursor,
                                 key_type=uuid.UUID)
