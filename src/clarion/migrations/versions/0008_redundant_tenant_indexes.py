"""drop two tenant_id indexes that other indexes of their tables already cover

Revision ID: 0008
Revises: 0007

webhook_calls has (tenant_id, id) and push_subscriptions UNIQUE(tenant_id, endpoint): each begins with tenant_id,
so it serves every per-tenant scan and the tenant foreign key that the index of tenant_id alone served, and each row
written updated one b-tree more than it needs to. Index drops only: no table is rebuilt on either database.
"""
from __future__ import annotations

from alembic import op

revision = '0008'
down_revision = '0007'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.drop_index('ix_webhook_calls_tenant_id', table_name='webhook_calls')
    op.drop_index('ix_push_subscriptions_tenant_id', table_name='push_subscriptions')


def downgrade() -> None:
    op.create_index('ix_push_subscriptions_tenant_id', 'push_subscriptions', ['tenant_id'], unique=False)
    op.create_index('ix_webhook_calls_tenant_id', 'webhook_calls', ['tenant_id'], unique=False)
