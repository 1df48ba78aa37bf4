"""dead letter quota: refused device messages tallied per device, reason and window

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-30 12:40:00
"""
from __future__ import annotations

from alembic import op
import sqlalchemy as sa


revision = '0008'
down_revision = '0007'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        'dead_letter_tallies',
        sa.Column('device', sa.String(length=64), nullable=False),
        sa.Column('window_start', sa.DateTime(timezone=True), nullable=False),
        sa.Column('reason', sa.String(length=32), nullable=False),
        sa.Column('received', sa.BigInteger(), nullable=False),
        sa.Column('stored', sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint('device', 'window_start', 'reason', name=op.f('pk_dead_letter_tallies')),
    )
    op.create_index(op.f('ix_dead_letter_tallies_window_start'), 'dead_letter_tallies', ['window_start'])


def downgrade() -> None:
    op.drop_index(op.f('ix_dead_letter_tallies_window_start'), table_name='dead_letter_tallies')
    op.drop_table('dead_letter_tallies')
