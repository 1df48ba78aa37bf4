"""console: live conversation signals (typing, sent), customers' photos, canned responses

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-30 09:40:00
"""
from __future__ import annotations

from alembic import op
import sqlalchemy as sa


revision = '0007'
down_revision = '0006'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        'conversation_signals',
        sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
        sa.Column('conversation_id', sa.String(length=255), nullable=False),
        sa.Column('party', sa.String(length=16), nullable=False),
        sa.Column('kind', sa.String(length=16), nullable=False),
        sa.Column('author', sa.String(length=64), nullable=True),
        sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint('id', name=op.f('pk_conversation_signals')),
    )
    op.create_index(op.f('ix_conversation_signals_conversation_id'), 'conversation_signals', ['conversation_id'])
    op.create_index(op.f('ix_conversation_signals_created_at'), 'conversation_signals', ['created_at'])
    op.create_table(
        'attachments',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('conversation_id', sa.String(length=255), nullable=False),
        sa.Column('handoff_id', sa.Integer(), nullable=True),
        sa.Column('ticket_id', sa.Integer(), nullable=True),
        sa.Column('filename', sa.String(length=200), nullable=False),
        sa.Column('content_type', sa.String(length=32), nullable=False),
        sa.Column('size', sa.Integer(), nullable=False),
        sa.Column('sha256', sa.String(length=64), nullable=False),
        sa.Column('data', sa.LargeBinary(), nullable=False),
        sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(['handoff_id'], ['handoffs.id'], name=op.f('fk_attachments_handoff_id_handoffs'), ondelete='SET NULL'),
        sa.ForeignKeyConstraint(['ticket_id'], ['tickets.id'], name=op.f('fk_attachments_ticket_id_tickets'), ondelete='SET NULL'),
        sa.PrimaryKeyConstraint('id', name=op.f('pk_attachments')),
    )
    op.create_index(op.f('ix_attachments_conversation_id'), 'attachments', ['conversation_id'])
    op.create_index(op.f('ix_attachments_handoff_id'), 'attachments', ['handoff_id'])
    op.create_index(op.f('ix_attachments_ticket_id'), 'attachments', ['ticket_id'])
    op.create_table(
        'canned_responses',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('title', sa.String(length=80), nullable=False),
        sa.Column('body', sa.Text(), nullable=False),
        sa.Column('updated_by', sa.String(length=64), nullable=False),
        sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint('id', name=op.f('pk_canned_responses')),
        sa.UniqueConstraint('title', name=op.f('uq_canned_responses_title')),
    )


def downgrade() -> None:
    op.drop_table('canned_responses')
    op.drop_table('attachments')
    op.drop_table('conversation_signals')
