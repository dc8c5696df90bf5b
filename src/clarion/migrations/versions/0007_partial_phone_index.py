"""contacts' phone uniqueness as a partial index: contacts without a phone take no entry in it

Revision ID: 0007
Revises: 0006

UNIQUE(tenant_id, phone) indexed every contact, the many without a phone as (tenant, NULL). NULLs never collide in
a unique index on either database, so a unique index on the contacts that have a phone enforces exactly the same
rule, and a write of a phone-less contact (most of a marketing list's import) updates one b-tree less. Every query
that looks contacts up by phone compares it (`phone = …`, `IN`, `LIKE`), which both databases know implies
`phone IS NOT NULL`, so those plans keep the index.

On SQLite a table constraint cannot be dropped in place: the table is rebuilt (batch mode). The migration runs on a
connection of its own, without `PRAGMA foreign_keys`, so dropping the old table cascades to nothing.
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0007'
down_revision = '0006'
branch_labels = None
depends_on = None

_NAME = 'uq_contacts_tenant_id_phone'


def upgrade() -> None:
    _refuse_with_foreign_keys_on()
    with op.batch_alter_table('contacts', schema=None) as batch_op:
        batch_op.drop_constraint(_NAME, type_='unique')
    op.create_index(_NAME, 'contacts', ['tenant_id', 'phone'], unique=True,
                    sqlite_where=sa.text('phone IS NOT NULL'), postgresql_where=sa.text('phone IS NOT NULL'))


def downgrade() -> None:
    _refuse_with_foreign_keys_on()
    op.drop_index(_NAME, table_name='contacts')
    with op.batch_alter_table('contacts', schema=None) as batch_op:
        batch_op.create_unique_constraint(_NAME, ['tenant_id', 'phone'])


def _refuse_with_foreign_keys_on() -> None:
    """SQLite: rebuilding contacts drops the old table, which with foreign keys enforced would delete every row
    that references a contact (ON DELETE CASCADE). Clarion's migrations never turn them on; refuse if a caller did."""
    bind = op.get_bind()
    if bind.dialect.name == 'sqlite' and bind.exec_driver_sql('PRAGMA foreign_keys').scalar():
        raise RuntimeError('migration 0007 rebuilds contacts: run it with PRAGMA foreign_keys=OFF')
