"""The Telegram chat index is partial (WHERE telegram_chat_id IS NOT NULL): a contact without a chat, which is
every imported contact, takes no entry in it, and a chat still belongs to one contact of a tenant."""

from __future__ import annotations

import pytest
from sqlalchemy import text
from sqlalchemy.exc import IntegrityError

from clarion.models import Contact
from tests.conftest import make_tenant

CHAT_INDEX = "ix_contacts_tenant_id_contacts_telegram_chat_id"


async def test_the_chat_index_is_partial_and_still_unique_per_tenant(db) -> None:  # type: ignore[no-untyped-def]
    sql = ("SELECT sql FROM sqlite_master WHERE name = :name" if db.dialect == "sqlite"
           else "SELECT indexdef FROM pg_indexes WHERE indexname = :name")
    async with db.transaction() as session:
        definition = (await session.execute(text(sql), {"name": CHAT_INDEX})).scalar_one()
    assert "UNIQUE" in definition.upper()
    assert "telegram_chat_id IS NOT NULL" in definition.replace("(", "").replace(")", "")

    first, second = await make_tenant(db, "ChatsA"), await make_tenant(db, "ChatsB")
    async with db.transaction() as session:
        session.add_all([Contact(tenant_id=first.id, email=f"n{i}@example.com") for i in range(3)])  # no chats
        session.add_all([Contact(tenant_id=first.id, email="a@example.com", telegram_chat_id="42"),
                         Contact(tenant_id=second.id, email="b@example.com", telegram_chat_id="42")])
    with pytest.raises(IntegrityError):
        async with db.transaction() as session:
            session.add(Contact(tenant_id=first.id, email="c@example.com", telegram_chat_id="42"))
