"""the "everyone is busy" notice of a queue timeout is kept until the customer has been told: a notice Rasa
missed (down, restarting) is retried with back-off instead of being lost, and told once

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-02 10:00:00
"""
from __future__ import annotations

from alembic import op
import sqlalchemy as sa


revision = '0011'
down_revision = '0010'
branch_labels = None
depends_on = None

PENDING = sa.text("timeout_notice_due_at IS NOT NULL")


def upgrade() -> None:
    # Callbacks moved before this revision keep NULLs: whether their customer heard the notice is unknown,
    # and a late "everyone is busy" could be wrong by now, so they are not retried.
    with op.batch_alter_table('handoffs', schema=None) as batch_op:
        batch_op.add_column(sa.Column('timeout_notice_due_at', sa.DateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column('timeout_notice_attempts', sa.Integer(), server_default='0', nullable=False))
        batch_op.add_column(sa.Column('timeout_told_at', sa.DateTime(timezone=True), nullable=True))
    # The sweeper looks for due notices on every run: only the few pending ones are in this index.
    op.create_index('ix_handoffs_timeout_notice_due', 'handoffs', ['timeout_notice_due_at'],
                    sqlite_where=PENDING, postgresql_where=PENDING)


def downgrade() -> None:
    op.drop_index('ix_handoffs_timeout_notice_due', table_name='handoffs')
    with op.batch_alter_table('handoffs', schema=None) as batch_op:
        batch_op.drop_column('timeout_told_at')
        batch_op.drop_column('timeout_notice_attempts')
        batch_op.drop_column('timeout_notice_due_at')
