"""proactive ticket updates (one message per status change) and one open handoff per safety fault

Revision ID: 0009
Revises: 0008
Create Date: 2026-11-30 12:30:00
"""
from __future__ import annotations

from alembic import op
import sqlalchemy as sa


revision = '0009'
down_revision = '0008'
branch_labels = None
depends_on = None

DEVICE_ONLY = sa.text("ticket_event_id IS NULL")
PER_CHANGE = sa.text("ticket_event_id IS NOT NULL")
SAFETY_OPEN = sa.text("reason = 'safety_fault' AND status IN ('queued', 'assigned', 'callback')")


def upgrade() -> None:
    # SQLite cannot drop a table constraint in place: batch mode rebuilds the table.
    with op.batch_alter_table('proactive_messages', schema=None) as batch_op:
        batch_op.add_column(sa.Column('ticket_event_id', sa.Integer(), nullable=True))
        batch_op.create_foreign_key(batch_op.f('fk_proactive_messages_ticket_event_id_ticket_events'),
                                    'ticket_events', ['ticket_event_id'], ['id'], ondelete='CASCADE')
        batch_op.drop_constraint('uq_proactive_messages_once', type_='unique')
    # Device messages stay one per (ticket, kind); a ticket update is one per status change.
    op.create_index('uq_proactive_messages_once', 'proactive_messages', ['ticket_id', 'kind'], unique=True,
                    sqlite_where=DEVICE_ONLY, postgresql_where=DEVICE_ONLY)
    op.create_index('uq_proactive_messages_event', 'proactive_messages', ['ticket_event_id'], unique=True,
                    sqlite_where=PER_CHANGE, postgresql_where=PER_CHANGE)
    # Before this index two paths could each queue a handoff for one safety fault: keep the oldest open one.
    op.execute(
        "UPDATE handoffs SET status = 'resolved', active_key = NULL WHERE reason = 'safety_fault' "
        "AND status IN ('queued', 'assigned', 'callback') AND ticket_id IS NOT NULL AND id NOT IN ("
        "  SELECT MIN(id) FROM handoffs WHERE reason = 'safety_fault' AND status IN ('queued', 'assigned', 'callback')"
        "  AND ticket_id IS NOT NULL GROUP BY ticket_id)"
    )
    op.create_index('uq_handoffs_open_safety_ticket', 'handoffs', ['ticket_id'], unique=True,
                    sqlite_where=SAFETY_OPEN, postgresql_where=SAFETY_OPEN)


def downgrade() -> None:
    op.drop_index('uq_handoffs_open_safety_ticket', table_name='handoffs')
    op.execute("DELETE FROM proactive_messages WHERE ticket_event_id IS NOT NULL")
    op.drop_index('uq_proactive_messages_event', table_name='proactive_messages')
    op.drop_index('uq_proactive_messages_once', table_name='proactive_messages')
    with op.batch_alter_table('proactive_messages', schema=None) as batch_op:
        batch_op.create_unique_constraint('uq_proactive_messages_once', ['ticket_id', 'kind'])
        batch_op.drop_constraint(batch_op.f('fk_proactive_messages_ticket_event_id_ticket_events'), type_='foreignkey')
        batch_op.drop_column('ticket_event_id')
