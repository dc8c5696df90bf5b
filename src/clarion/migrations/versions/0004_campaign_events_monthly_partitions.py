"""campaign events partitioned by month on PostgreSQL

Revision ID: 0004
Revises: 0003

PostgreSQL only (SQLite keeps the plain table). A table cannot be turned into a partitioned one in place, so
the event log is rebuilt: the old table steps aside, a table PARTITION BY RANGE (occurred_at) takes its name,
columns and defaults (LIKE, so the id sequence carries over), its primary key becomes (id, occurred_at) — a
partitioned table's key must hold the partition key —, the existing rows' months get their partitions before
the rows are copied, and a DEFAULT partition catches whatever no month covers. Later months are created ahead
of time by the `campaign.ensure_event_partitions` tick. Downgrade copies everything back into a plain table.
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from clarion.models.campaign_events import event_partition_ddl, month_of

revision = '0004'
down_revision = '0003'
branch_labels = None
depends_on = None

TABLE = "campaign_events"
SEQUENCE = "campaign_events_id_seq"
# (name as the naming convention spells it, columns), as 0001 created them.
INDEXES = (
    ("ix_campaign_events_campaign_id_campaign_events_id", ["campaign_id", "id"]),
    ("ix_campaign_events_campaign_id_campaign_events_type_campaign_events_id", ["campaign_id", "type", "id"]),
    ("ix_campaign_events_recipient_id", ["recipient_id"]),
    ("ix_campaign_events_tenant_id", ["tenant_id"]),
)
FOREIGN_KEYS = (
    ("fk_campaign_events_campaign_id_campaigns", "campaigns", "campaign_id", "CASCADE"),
    ("fk_campaign_events_contact_id_contacts", "contacts", "contact_id", "SET NULL"),
    ("fk_campaign_events_recipient_id_campaign_recipients", "campaign_recipients", "recipient_id", "CASCADE"),
    ("fk_campaign_events_tenant_id_tenants", "tenants", "tenant_id", "CASCADE"),
)


def _set_aside(new_name: str) -> None:
    """Rename the current table and free the names its key and indexes hold, so the new table can take them."""
    op.rename_table(TABLE, new_name)
    op.execute(f"ALTER TABLE {new_name} RENAME CONSTRAINT pk_{TABLE} TO pk_{new_name}")
    for name, _ in INDEXES:
        op.drop_index(op.f(name), table_name=new_name)


def _rebuild(old_name: str, *, partitioned: bool) -> None:
    """A new `campaign_events` shaped like `old_name` (columns, defaults, NOT NULLs), with the keys and indexes."""
    suffix = " PARTITION BY RANGE (occurred_at)" if partitioned else ""
    op.execute(f"CREATE TABLE {TABLE} (LIKE {old_name} INCLUDING DEFAULTS INCLUDING CONSTRAINTS){suffix}")
    op.create_primary_key(op.f(f"pk_{TABLE}"), TABLE, ["id", "occurred_at"] if partitioned else ["id"])
    for name, referred, column, ondelete in FOREIGN_KEYS:
        op.create_foreign_key(op.f(name), TABLE, referred, [column], ["id"], ondelete=ondelete)
    for name, columns in INDEXES:
        op.create_index(op.f(name), TABLE, columns, unique=False)
    # The id default still reads the old table's sequence; hand the sequence to the new table before the
    # old one (its owner until now) is dropped, or it would be dropped with it.
    op.execute(f"ALTER SEQUENCE {SEQUENCE} OWNED BY {TABLE}.id")


def _move_rows(old_name: str) -> None:
    op.execute(f"INSERT INTO {TABLE} SELECT * FROM {old_name}")
    op.drop_table(old_name)


def upgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    old_name = f"{TABLE}_unpartitioned"
    _set_aside(old_name)
    _rebuild(old_name, partitioned=True)
    op.execute(event_partition_ddl(None))
    # Each month already holding events gets its partition now, so the copy lands there and not in DEFAULT.
    months = op.get_bind().execute(sa.text(
        f"SELECT DISTINCT date_trunc('month', occurred_at, 'UTC') FROM {old_name} WHERE isfinite(occurred_at)"
    )).scalars().all()
    for month in sorted({month_of(m) for m in months}):
        op.execute(event_partition_ddl(month))
    _move_rows(old_name)


def downgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    old_name = f"{TABLE}_partitioned"
    _set_aside(old_name)
    _rebuild(old_name, partitioned=False)
    _move_rows(old_name)  # dropping the partitioned table drops its partitions
