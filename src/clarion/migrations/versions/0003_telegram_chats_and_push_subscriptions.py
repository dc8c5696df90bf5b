"""telegram chats and web push subscriptions

contacts.telegram_chat_id (unique per tenant through an index, so SQLite adds it without rebuilding the table)
and push_subscriptions: the browsers' Web Push subscriptions of each contact.

Revision ID: 0003
Revises: 0002
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import clarion.kit.types

revision = '0003'
down_revision = '0002'
branch_labels = None
depends_on = None

_CHAT_INDEX = 'ix_contacts_tenant_id_contacts_telegram_chat_id'


def upgrade() -> None:
    op.add_column('contacts', sa.Column('telegram_chat_id', sa.String(length=32), nullable=True))
    # Partial: only the few contacts with a chat take an entry (an import writes millions without one).
    op.create_index(op.f(_CHAT_INDEX), 'contacts', ['tenant_id', 'telegram_chat_id'], unique=True,
                    sqlite_where=sa.text('telegram_chat_id IS NOT NULL'),
                    postgresql_where=sa.text('telegram_chat_id IS NOT NULL'))

    op.create_table(
        'push_subscriptions',
        sa.Column('contact_id', sa.Uuid(), nullable=False),
        sa.Column('endpoint', sa.String(length=2048), nullable=False),
        sa.Column('p256dh', sa.String(length=100), nullable=False),
        sa.Column('auth', sa.String(length=32), nullable=False),
        sa.Column('user_agent', sa.String(length=500), nullable=True),
        sa.Column('created_at', clarion.kit.types.UTCDateTime(timezone=True), nullable=False),
        sa.Column('updated_at', clarion.kit.types.UTCDateTime(timezone=True), nullable=False),
        sa.Column('last_success_at', clarion.kit.types.UTCDateTime(timezone=True), nullable=True),
        sa.Column('id', sa.Uuid(), nullable=False),
        sa.Column('tenant_id', sa.Uuid(), nullable=False),
        sa.ForeignKeyConstraint(['contact_id'], ['contacts.id'],
                                name=op.f('fk_push_subscriptions_contact_id_contacts'), ondelete='CASCADE'),
        sa.ForeignKeyConstraint(['tenant_id'], ['tenants.id'],
                                name=op.f('fk_push_subscriptions_tenant_id_tenants'), ondelete='CASCADE'),
        sa.PrimaryKeyConstraint('id', name=op.f('pk_push_subscriptions')),
        sa.UniqueConstraint('tenant_id', 'endpoint', name=op.f('uq_push_subscriptions_tenant_id_endpoint')),
    )
    op.create_index(op.f('ix_push_subscriptions_tenant_id'), 'push_subscriptions', ['tenant_id'], unique=False)
    op.create_index(op.f('ix_push_subscriptions_contact_id'), 'push_subscriptions', ['contact_id'], unique=False)


def downgrade() -> None:
    op.drop_index(op.f('ix_push_subscriptions_contact_id'), table_name='push_subscriptions')
    op.drop_index(op.f('ix_push_subscriptions_tenant_id'), table_name='push_subscriptions')
    op.drop_table('push_subscriptions')
    op.drop_index(op.f(_CHAT_INDEX), table_name='contacts')
    # SQLite drops a column only by rebuilding the table: batch mode does that there, ALTER on PostgreSQL.
    with op.batch_alter_table('contacts', schema=None) as batch_op:
        batch_op.drop_column('telegram_chat_id')
