"""send accounting (the account each message went through, and whom each tiered account reached)

Revision ID: 0006
Revises: 0005
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import clarion.kit.types

revision = '0006'
down_revision = '0005'
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Nullable and without a default: adding it rewrites nothing, however many recipients there are. No foreign
    # key, like campaigns.channel_config_id: campaign is the lower layer, and an account's history outlives it.
    with op.batch_alter_table('campaign_recipients', schema=None) as batch_op:
        batch_op.add_column(sa.Column('channel_config_id', sa.Uuid(), nullable=True))

    # One row per (tiered account, contact): when the account last messaged the contact. A messaging-limit
    # tier's rolling 24-hour count is a range of (channel_config_id, last_messaged_at).
    op.create_table('account_reach',
    sa.Column('channel_config_id', sa.Uuid(), nullable=False),
    sa.Column('contact_id', sa.Uuid(), nullable=False),
    sa.Column('last_messaged_at', clarion.kit.types.UTCDateTime(timezone=True), nullable=False),
    sa.Column('tenant_id', sa.Uuid(), nullable=False),
    sa.ForeignKeyConstraint(['contact_id'], ['contacts.id'], name=op.f('fk_account_reach_contact_id_contacts'),
                            ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['tenant_id'], ['tenants.id'], name=op.f('fk_account_reach_tenant_id_tenants'),
                            ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('channel_config_id', 'contact_id', name=op.f('pk_account_reach'))
    )
    with op.batch_alter_table('account_reach', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_account_reach_channel_config_id_account_reach_last_messaged_at'),
                              ['channel_config_id', 'last_messaged_at'], unique=False)
        batch_op.create_index(batch_op.f('ix_account_reach_tenant_id'), ['tenant_id'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('account_reach', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_account_reach_tenant_id'))
        batch_op.drop_index(batch_op.f('ix_account_reach_channel_config_id_account_reach_last_messaged_at'))
    op.drop_table('account_reach')
    with op.batch_alter_table('campaign_recipients', schema=None) as batch_op:
        batch_op.drop_column('channel_config_id')
