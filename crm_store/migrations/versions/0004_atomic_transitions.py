"""atomic transitions: one ticket duplicate key for every source, claims on proactive messages and agent
replies, one CSAT rating per handoff

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-30 09:30:00

Existing data: open tickets that already duplicate each other (possible before, for tickets without a
device, whose NULL device never collided in the old unique key) keep the oldest as the one new reports
join; the others stay open for staff to merge, each in a scope of its own ("legacy-duplicate:<id>") with
a private note saying so, so the new unique index can be built.
"""
from __future__ import annotations

import datetime as dt

from alembic import op
import sqlalchemy as sa


revision = '0004'
down_revision = '0003'
branch_labels = None
depends_on = None

OPEN_WHERE = sa.text("open_dedup_key IS NOT NULL")


def _backfill_ticket_scopes() -> None:
    bind = op.get_bind()
    bind.execute(sa.text("UPDATE tickets SET dedup_scope = 'device:' || CAST(device_id AS VARCHAR(20)) "
                         "WHERE device_id IS NOT NULL"))
    bind.execute(sa.text("UPDATE tickets SET dedup_scope = 'customer:' || CAST(customer_id AS VARCHAR(20)) "
                         "WHERE device_id IS NULL AND customer_id IS NOT NULL"))
    duplicates = bind.execute(sa.text(
        "SELECT t.id, t.number, k.keeper FROM tickets t JOIN ("
        "  SELECT dedup_scope, open_dedup_key, MIN(id) AS keeper FROM tickets WHERE open_dedup_key IS NOT NULL"
        "  GROUP BY dedup_scope, open_dedup_key HAVING COUNT(*) > 1"
        ") k ON k.dedup_scope = t.dedup_scope AND k.open_dedup_key = t.open_dedup_key "
        "WHERE t.id <> k.keeper ORDER BY t.id"
    )).all()
    events = sa.table(
        "ticket_events", sa.column("ticket_id", sa.Integer), sa.column("kind", sa.String), sa.column("author", sa.String),
        sa.column("body", sa.Text), sa.column("is_private", sa.Boolean), sa.column("data", sa.JSON),
        sa.column("created_at", sa.DateTime(timezone=True)),
    )
    now = dt.datetime.now(dt.timezone.utc)
    for ticket_id, _number, keeper in duplicates:
        bind.execute(sa.text("UPDATE tickets SET dedup_scope = :scope WHERE id = :id"),
                     {"scope": f"legacy-duplicate:{ticket_id}", "id": ticket_id})
        keeper_number = bind.execute(sa.text("SELECT number FROM tickets WHERE id = :id"), {"id": keeper}).scalar()
        bind.execute(events.insert().values(
            ticket_id=ticket_id, kind="note", author="system", is_private=True, created_at=now,
            body=f"Ticket {keeper_number} is open for the same problem; new reports go there. "
                 "Merge or close this one.",
            data={"duplicate_of": keeper_number},
        ))


def upgrade() -> None:
    with op.batch_alter_table('tickets', schema=None) as batch_op:
        batch_op.add_column(sa.Column('dedup_scope', sa.String(length=64), server_default='anonymous', nullable=False))
    _backfill_ticket_scopes()
    op.create_index('uq_tickets_open_scope_problem', 'tickets', ['dedup_scope', 'open_dedup_key'], unique=True,
                    sqlite_where=OPEN_WHERE, postgresql_where=OPEN_WHERE)

    with op.batch_alter_table('proactive_messages', schema=None) as batch_op:
        batch_op.add_column(sa.Column('claimed_by', sa.String(length=255), nullable=True))
        batch_op.add_column(sa.Column('claimed_until', sa.DateTime(timezone=True), nullable=True))

    with op.batch_alter_table('handoff_messages', schema=None) as batch_op:
        batch_op.add_column(sa.Column('delivery_attempts', sa.Integer(), server_default='0', nullable=False))
        batch_op.add_column(sa.Column('last_delivery_error', sa.String(length=300), nullable=True))

    with op.batch_alter_table('csat_ratings', schema=None) as batch_op:
        batch_op.add_column(sa.Column('handoff_id', sa.Integer(), nullable=True))
        batch_op.create_foreign_key(batch_op.f('fk_csat_ratings_handoff_id_handoffs'), 'handoffs', ['handoff_id'], ['id'],
                                    ondelete='SET NULL')
    op.create_index('uq_csat_ratings_handoff', 'csat_ratings', ['handoff_id'], unique=True)


def downgrade() -> None:
    op.drop_index('uq_csat_ratings_handoff', table_name='csat_ratings')
    with op.batch_alter_table('csat_ratings', schema=None) as batch_op:
        batch_op.drop_constraint(batch_op.f('fk_csat_ratings_handoff_id_handoffs'), type_='foreignkey')
        batch_op.drop_column('handoff_id')
    with op.batch_alter_table('handoff_messages', schema=None) as batch_op:
        batch_op.drop_column('last_delivery_error')
        batch_op.drop_column('delivery_attempts')
    with op.batch_alter_table('proactive_messages', schema=None) as batch_op:
        batch_op.drop_column('claimed_until')
        batch_op.drop_column('claimed_by')
    op.drop_index('uq_tickets_open_scope_problem', table_name='tickets')
    with op.batch_alter_table('tickets', schema=None) as batch_op:
        batch_op.drop_column('dedup_scope')
