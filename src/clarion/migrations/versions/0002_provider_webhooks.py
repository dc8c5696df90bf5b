"""provider webhooks (raw bodies, routing accounts, consent from providers)

channel_configs.webhook_account: the account a provider's webhook calls name in the clear, indexed with the
provider, so /webhooks/<name> finds its candidate accounts without decrypting every config. webhook_calls: every
authentic call's raw body (for audit, retention-limited) and the (account, body digest) key that makes a replayed
call change nothing. campaign_recipients (tenant_id, provider_message_id): the status lookup, tenant-scoped; with
only 0001's single-column indexes SQLite's planner picks tenant_id and scans every recipient of the tenant.

Revision ID: 0002
Revises: 0001
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

import clarion.kit.types

revision = '0002'
down_revision = '0001'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('channel_configs', schema=None) as batch_op:
        batch_op.add_column(sa.Column('webhook_account', sa.String(length=200), nullable=True))
        batch_op.create_index('ix_channel_configs_provider_webhook_account', ['provider', 'webhook_account'],
                              unique=False)

    with op.batch_alter_table('campaign_recipients', schema=None) as batch_op:
        batch_op.create_index('ix_campaign_recipients_tenant_id_provider_message_id',
                              ['tenant_id', 'provider_message_id'], unique=False)

    op.create_table(
        'webhook_calls',
        sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=True, nullable=False),
        sa.Column('channel_config_id', sa.Uuid(), nullable=True),
        sa.Column('provider', sa.String(length=32), nullable=False),
        sa.Column('kind', sa.String(length=32), nullable=True),
        sa.Column('received_at', clarion.kit.types.UTCDateTime(timezone=True), nullable=False),
        sa.Column('headers', sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), 'postgresql'),
                  nullable=False),
        sa.Column('body', sa.Text(), nullable=False),
        sa.Column('body_sha256', sa.String(length=64), nullable=False),
        sa.Column('outcome', sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), 'postgresql'),
                  nullable=True),
        sa.Column('tenant_id', sa.Uuid(), nullable=False),
        sa.ForeignKeyConstraint(['channel_config_id'], ['channel_configs.id'],
                                name=op.f('fk_webhook_calls_channel_config_id_channel_configs'), ondelete='SET NULL'),
        sa.ForeignKeyConstraint(['tenant_id'], ['tenants.id'], name=op.f('fk_webhook_calls_tenant_id_tenants'),
                                ondelete='CASCADE'),
        sa.PrimaryKeyConstraint('id', name=op.f('pk_webhook_calls')),
        sa.UniqueConstraint('channel_config_id', 'body_sha256', name='uq_webhook_calls_account_body'),
    )
    with op.batch_alter_table('webhook_calls', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_webhook_calls_tenant_id'), ['tenant_id'], unique=False)
        batch_op.create_index('ix_webhook_calls_tenant_id_id', ['tenant_id', 'id'], unique=False)
        batch_op.create_index('ix_webhook_calls_tenant_id_provider_id', ['tenant_id', 'provider', 'id'], unique=False)
        batch_op.create_index('ix_webhook_calls_received_at', ['received_at'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('webhook_calls', schema=None) as batch_op:
        batch_op.drop_index('ix_webhook_calls_received_at')
        batch_op.drop_index('ix_webhook_calls_tenant_id_provider_id')
        batch_op.drop_index('ix_webhook_calls_tenant_id_id')
        batch_op.drop_index(batch_op.f('ix_webhook_calls_tenant_id'))
    op.drop_table('webhook_calls')

    with op.batch_alter_table('campaign_recipients', schema=None) as batch_op:
        batch_op.drop_index('ix_campaign_recipients_tenant_id_provider_message_id')

    with op.batch_alter_table('channel_configs', schema=None) as batch_op:
        batch_op.drop_index('ix_channel_configs_provider_webhook_account')
        batch_op.drop_column('webhook_account')
