"""auth failures: sign-in and chat verification failures counted outside any conversation, with lock-outs

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-30 09:40:00
"""
from __future__ import annotations

from alembic import op
import sqlalchemy as sa


revision = '0005'
down_revision = '0004'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        'auth_failures',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('scope', sa.String(length=32), nullable=False),
        sa.Column('key_hash', sa.String(length=64), nullable=False),
        sa.Column('failures', sa.Integer(), nullable=False),
        sa.Column('first_failure_at', sa.DateTime(timezone=True), nullable=False),
        sa.Column('last_failure_at', sa.DateTime(timezone=True), nullable=False),
        sa.Column('locked_until', sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint('id', name=op.f('pk_auth_failures')),
        sa.UniqueConstraint('scope', 'key_hash', name='uq_auth_failures_scope_key'),
    )


def downgrade() -> None:
    op.drop_table('auth_failures')
