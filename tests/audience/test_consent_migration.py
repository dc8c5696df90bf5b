"""Migration 0005 moves default consent onto the contact without changing anyone's consent, both ways."""

from __future__ import annotations

import uuid

from alembic import command
from sqlalchemy import create_engine, text

from clarion.config import to_sync_url
from clarion.migrate import alembic_config, upgrade


def _ids(url: str) -> tuple[str, str, str]:
    """Ids as the database stores them: 32 hex digits on SQLite, uuid text on PostgreSQL."""
    values = (uuid.uuid4(), uuid.uuid4(), uuid.uuid4())
    return tuple(v.hex if url.startswith("sqlite") else str(v) for v in values)  # type: ignore[return-value]


def test_existing_consent_survives_upgrade_and_default_consent_gets_its_rows_back_on_downgrade(
        empty_database: str) -> None:
    url = empty_database
    upgrade(url, "0004")
    tenant, old, new = _ids(url)
    engine = create_engine(to_sync_url(url))
    try:
        with engine.begin() as conn:
            conn.execute(text("INSERT INTO tenants (id, name, plan, created_at, updated_at) "
                              "VALUES (:t, 'Old', 'free', '2024-01-01 00:00:00', '2024-01-01 00:00:00')"), {"t": tenant})
            conn.execute(text("INSERT INTO contacts (id, tenant_id, email, phone, attributes, tags, created_at, "
                              "updated_at) VALUES (:c, :t, 'old@example.com', '+14155550150', '{}', '[]', "
                              "'2024-01-02 00:00:00', '2024-01-02 00:00:00')"), {"c": old, "t": tenant})
            for channel, status in (("email", "subscribed"), ("sms", "unsubscribed")):
                conn.execute(text("INSERT INTO contact_subscriptions (tenant_id, contact_id, channel, status, "
                                  "changed_at, source) VALUES (:t, :c, :ch, :st, '2024-01-03 00:00:00', 'api')"),
                             {"t": tenant, "c": old, "ch": channel, "st": status})

        upgrade(url)
        with engine.begin() as conn:
            row = conn.execute(text("SELECT default_subscribed_channels, created_via FROM contacts WHERE id = :c"),
                               {"c": old}).one()
            assert tuple(row) == (0, "api")  # no defaults: its rows alone still decide (no whatsapp consent)
            # A contact created after the upgrade: subscribed by default to email (1), sms (2) and whatsapp (4).
            conn.execute(text("INSERT INTO contacts (id, tenant_id, email, phone, attributes, tags, created_at, "
                              "updated_at, default_subscribed_channels, created_via) VALUES (:c, :t, "
                              "'new@example.com', '+14155550151', '{}', '[]', '2025-05-05 00:00:00', "
                              "'2025-05-05 00:00:00', 7, 'import')"), {"c": new, "t": tenant})
            conn.execute(text("INSERT INTO contact_subscriptions (tenant_id, contact_id, channel, status, changed_at, "
                              "source) VALUES (:t, :c, 'sms', 'unsubscribed', '2025-06-06 00:00:00', 'api')"),
                         {"t": tenant, "c": new})

        command.downgrade(alembic_config(url), "0004")
        with engine.begin() as conn:
            rows = conn.execute(text("SELECT c.email, s.channel, s.status, s.source FROM contact_subscriptions s "
                                     "JOIN contacts c ON c.id = s.contact_id ORDER BY c.email, s.channel")).all()
            columns = [r[1] for r in conn.execute(text("PRAGMA table_info(contacts)")).all()] \
                if url.startswith("sqlite") else conn.execute(text(
                    "SELECT column_name FROM information_schema.columns WHERE table_name = 'contacts'")).scalars().all()
    finally:
        engine.dispose()
    assert [tuple(r) for r in rows] == [
        ("new@example.com", "email", "subscribed", "import"),
        ("new@example.com", "sms", "unsubscribed", "api"),       # its own row wins over the default
        ("new@example.com", "whatsapp", "subscribed", "import"),
        ("old@example.com", "email", "subscribed", "api"),
        ("old@example.com", "sms", "unsubscribed", "api"),
    ]
    assert "default_subscribed_channels" not in columns and "created_via" not in columns
