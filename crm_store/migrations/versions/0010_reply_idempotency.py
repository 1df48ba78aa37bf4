"""agent replies carry the console's idempotency key: a retried send (a proxy's retry after a replica died,
the console's own retry) stores and delivers the reply once

Revision ID: 0010
Revises: 0009
Create Date: 2026-11-30 16:20:00
"""
from __future__ import annotations

from alembic import op
import sqlalchemy as sa


revision = '0010'
down_revision = '0009'
branch_labels = None
depends_on = None

KEYED = sa.text("client_key IS NOT NULL")


def upgrade() -> None:
    with op.batch_alter_table('handoff_messages', schema=None) as batch_op:
        batch_op.add_column(sa.Column('client_key', sa.String(length=64), nullable=True))
    op.create_index('uq_handoff_messages_client_key', 'handoff_messages', ['handoff_id', 'client_key'], unique=True,
                    sqlite_where=KEYED, postgresql_where=KEYED)


def downgrade() -> None:
    op.drop_index('uq_handoff_messages_client_key', table_name='handoff_messages')
    with op.batch_alter_table('handoff_messages', schema=None) as batch_op:
        batch_op.drop_column('client_key')
