"""The Telegram chat and phone indexes are partial (WHERE … IS NOT NULL): a contact without a chat (every imported
contact) or without a phone (most of them) takes no entry, and a chat or a phone still belongs to one contact of a
tenant. Migration 0007, which made the phone index partial, keeps every contact and every row that points at one."""

from __future__ import annotations

from uuid import uuid4

import pytest
from alembic import command
from sqlalchemy import create_engine, text
from sqlalchemy.exc import IntegrityError

from clarion.config import to_sync_url
from clarion.migrate import alembic_config, upgrade
from clarion.models import Contact
from tests.conftest import make_tenant

CHAT_INDEX = "ix_contacts_tenant_id_contacts_telegram_chat_id"
PHONE_INDEX = "uq_contacts_tenant_id_phone"


async def _index_definition(db, name: str) -> str:  # type: ignore[no-untyped-def]
    sql = ("SELECT sql FROM sqlite_master WHERE name = :name" if db.dialect == "sqlite"
           else "SELECT indexdef FROM pg_indexes WHERE indexname = :name")
    async with db.transaction() as session:
        return str((await session.execute(text(sql), {"name": name})).scalar_one()).replace("(", "").replace(")", "")


@pytest.mark.parametrize(("index", "column", "value"), [(CHAT_INDEX, "telegram_chat_id", "42"),
                                                         (PHONE_INDEX, "phone", "+14155550100")])
async def test_the_index_is_partial_and_still_unique_per_tenant(db, index: str, column: str,  # type: ignore[no-untyped-def]
                                                                value: str) -> None:
    definition = await _index_definition(db, index)
    assert "UNIQUE" in definition.upper()
    assert f"{column} IS NOT NULL" in definition

    first, second = await make_tenant(db, f"{column}A"), await make_tenant(db, f"{column}B")
    async with db.transaction() as session:
        session.add_all([Contact(tenant_id=first.id, email=f"n{i}@example.com") for i in range(3)])  # none set
        session.add_all([Contact(tenant_id=first.id, email="a@example.com", **{column: value}),
                         Contact(tenant_id=second.id, email="b@example.com", **{column: value})])
    with pytest.raises(IntegrityError):
        async with db.transaction() as session:
            session.add(Contact(tenant_id=first.id, email="c@example.com", **{column: value}))


def test_migration_0007_keeps_every_contact_and_what_points_at_them(empty_database: str) -> None:
    url = empty_database
    upgrade(url, "0006")
    tenant, with_phone, without_phone, segment = (
        value.hex if url.startswith("sqlite") else str(value) for value in (uuid4(), uuid4(), uuid4(), uuid4()))
    stamp = "2025-01-01 00:00:00"
    engine = create_engine(to_sync_url(url))

    def snapshot() -> list[object]:
        with engine.begin() as conn:
            return [conn.execute(text(sql)).all() for sql in (
                "SELECT email, phone, default_subscribed_channels FROM contacts ORDER BY email",
                "SELECT c.email, s.channel, s.status FROM contact_subscriptions s JOIN contacts c ON c.id = s.contact_id",
                "SELECT c.email FROM segment_members m JOIN contacts c ON c.id = m.contact_id")]

    try:
        with engine.begin() as conn:
            conn.execute(text("INSERT INTO tenants (id, name, plan, created_at, updated_at) "
                              "VALUES (:t, 'Old', 'free', :s, :s)"), {"t": tenant, "s": stamp})
            for contact, email, phone in ((with_phone, "p@example.com", "+14155550150"),
                                          (without_phone, "n@example.com", None)):
                conn.execute(text("INSERT INTO contacts (id, tenant_id, email, phone, attributes, tags, created_at, "
                                  "updated_at, default_subscribed_channels) VALUES (:c, :t, :e, :p, '{}', '[]', "
                                  ":s, :s, 1)"), {"c": contact, "t": tenant, "e": email, "p": phone, "s": stamp})
            conn.execute(text("INSERT INTO contact_subscriptions (tenant_id, contact_id, channel, status, changed_at, "
                              "source) VALUES (:t, :c, 'sms', 'unsubscribed', :s, 'api')"),
                         {"t": tenant, "c": with_phone, "s": stamp})
            conn.execute(text("INSERT INTO segments (id, tenant_id, name, kind, created_at, updated_at) "
                              "VALUES (:g, :t, 'Static', 'static', :s, :s)"), {"g": segment, "t": tenant, "s": stamp})
            conn.execute(text("INSERT INTO segment_members (tenant_id, segment_id, contact_id, added_at) "
                              "VALUES (:t, :g, :c, :s)"), {"t": tenant, "g": segment, "c": without_phone, "s": stamp})
        before = snapshot()
        assert [len(part) for part in before] == [2, 1, 1]

        upgrade(url)
        assert snapshot() == before
        with pytest.raises(IntegrityError), engine.begin() as conn:  # the rule is the same: one owner per phone
            conn.execute(text("UPDATE contacts SET phone = '+14155550150' WHERE id = :c"), {"c": without_phone})

        command.downgrade(alembic_config(url), "0006")
        assert snapshot() == before
        upgrade(url)
        assert snapshot() == before
    finally:
        engine.dispose()
