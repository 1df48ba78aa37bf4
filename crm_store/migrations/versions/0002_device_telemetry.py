"""device telemetry

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-24 05:57:39.957420
"""
from __future__ import annotations

from alembic import op
import sqlalchemy as sa


revision = '0002'
down_revision = '0001'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('dead_letters',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('received_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('source', sa.String(length=16), nullable=False),
    sa.Column('topic', sa.String(length=300), nullable=False),
    sa.Column('reason', sa.String(length=32), nullable=False),
    sa.Column('detail', sa.String(length=500), nullable=False),
    sa.Column('payload', sa.Text(), nullable=False),
    sa.Column('payload_size', sa.Integer(), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_dead_letters'))
    )
    with op.batch_alter_table('dead_letters', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_dead_letters_reason'), ['reason'], unique=False)
        batch_op.create_index(batch_op.f('ix_dead_letters_received_at'), ['received_at'], unique=False)

    op.create_table('ingest_counters',
    sa.Column('name', sa.String(length=64), nullable=False),
    sa.Column('value', sa.BigInteger(), nullable=False),
    sa.PrimaryKeyConstraint('name', name=op.f('pk_ingest_counters'))
    )
    op.create_table('product_lots',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('code', sa.String(length=32), nullable=False),
    sa.Column('model_id', sa.Integer(), nullable=False),
    sa.Column('status', sa.Enum('ok', 'excursion', 'released', name='lotstatus', native_enum=False, length=32), nullable=False),
    sa.Column('excursion_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('excursion_detail', sa.JSON(), nullable=False),
    sa.ForeignKeyConstraint(['model_id'], ['product_models.id'], name=op.f('fk_product_lots_model_id_product_models')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_product_lots')),
    sa.UniqueConstraint('code', name=op.f('uq_product_lots_code'))
    )
    op.create_table('telemetry_rules',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('model_id', sa.Integer(), nullable=False),
    sa.Column('fault_code', sa.String(length=16), nullable=False),
    sa.Column('metric', sa.String(length=64), nullable=False),
    sa.Column('operator', sa.String(length=2), nullable=False),
    sa.Column('threshold', sa.Float(), nullable=False),
    sa.Column('hold_seconds', sa.Integer(), nullable=False),
    sa.Column('recovery_seconds', sa.Integer(), nullable=False),
    sa.Column('action', sa.Enum('ticket', 'quarantine_lot', name='ruleaction', native_enum=False, length=32), nullable=False),
    sa.Column('enabled', sa.Boolean(), nullable=False),
    sa.ForeignKeyConstraint(['model_id'], ['product_models.id'], name=op.f('fk_telemetry_rules_model_id_product_models'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_telemetry_rules'))
    )
    with op.batch_alter_table('telemetry_rules', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_telemetry_rules_model_id'), ['model_id'], unique=False)

    op.create_table('device_credentials',
    sa.Column('device_id', sa.Integer(), nullable=False),
    sa.Column('token_sha256', sa.String(length=64), nullable=False),
    sa.Column('mqtt_password_hash', sa.String(length=255), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('revoked_at', sa.DateTime(timezone=True), nullable=True),
    sa.ForeignKeyConstraint(['device_id'], ['devices.id'], name=op.f('fk_device_credentials_device_id_devices'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('device_id', name=op.f('pk_device_credentials')),
    sa.UniqueConstraint('token_sha256', name=op.f('uq_device_credentials_token_sha256'))
    )
    op.create_table('device_messages',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('device_id', sa.Integer(), nullable=False),
    sa.Column('kind', sa.Enum('telemetry', 'fault', 'status', name='devicemessagekind', native_enum=False, length=32), nullable=False),
    sa.Column('seq', sa.BigInteger(), nullable=False),
    sa.Column('ts', sa.DateTime(timezone=True), nullable=False),
    sa.Column('received_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('body', sa.JSON(), nullable=False),
    sa.ForeignKeyConstraint(['device_id'], ['devices.id'], name=op.f('fk_device_messages_device_id_devices'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_device_messages')),
    sa.UniqueConstraint('device_id', 'ts', 'seq', name='uq_device_messages_once')
    )
    with op.batch_alter_table('device_messages', schema=None) as batch_op:
        batch_op.create_index('ix_device_messages_latest', ['device_id', 'kind', 'ts'], unique=False)

    op.create_table('device_rule_states',
    sa.Column('device_id', sa.Integer(), nullable=False),
    sa.Column('rule_key', sa.String(length=64), nullable=False),
    sa.Column('breach_since', sa.DateTime(timezone=True), nullable=True),
    sa.Column('active', sa.Boolean(), nullable=False),
    sa.Column('normal_since', sa.DateTime(timezone=True), nullable=True),
    sa.Column('last_ts', sa.DateTime(timezone=True), nullable=True),
    sa.ForeignKeyConstraint(['device_id'], ['devices.id'], name=op.f('fk_device_rule_states_device_id_devices'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('device_id', 'rule_key', name=op.f('pk_device_rule_states'))
    )
    op.create_table('proactive_messages',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('customer_id', sa.Integer(), nullable=False),
    sa.Column('ticket_id', sa.Integer(), nullable=False),
    sa.Column('kind', sa.Enum('device_fault', 'device_recovered', name='proactivekind', native_enum=False, length=32), nullable=False),
    sa.Column('status', sa.Enum('pending', 'held', 'sent', 'failed', name='proactivestatus', native_enum=False, length=32), nullable=False),
    sa.Column('safety_critical', sa.Boolean(), nullable=False),
    sa.Column('due_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('detected_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('sent_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('channel', sa.String(length=32), nullable=True),
    sa.Column('conversation_id', sa.String(length=255), nullable=True),
    sa.Column('attempts', sa.Integer(), nullable=False),
    sa.Column('last_error', sa.String(length=300), nullable=True),
    sa.Column('reason', sa.String(length=64), nullable=True),
    sa.ForeignKeyConstraint(['customer_id'], ['customers.id'], name=op.f('fk_proactive_messages_customer_id_customers'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['ticket_id'], ['tickets.id'], name=op.f('fk_proactive_messages_ticket_id_tickets'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_proactive_messages')),
    sa.UniqueConstraint('ticket_id', 'kind', name='uq_proactive_messages_once')
    )
    with op.batch_alter_table('proactive_messages', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_proactive_messages_customer_id'), ['customer_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_proactive_messages_status'), ['status'], unique=False)

    with op.batch_alter_table('devices', schema=None) as batch_op:
        batch_op.add_column(sa.Column('monitors_lot_id', sa.Integer(), nullable=True))
        batch_op.create_foreign_key(batch_op.f('fk_devices_monitors_lot_id_product_lots'), 'product_lots', ['monitors_lot_id'], ['id'], ondelete='SET NULL')

    with op.batch_alter_table('purchases', schema=None) as batch_op:
        batch_op.add_column(sa.Column('lot_id', sa.Integer(), nullable=True))
        batch_op.create_index(batch_op.f('ix_purchases_lot_id'), ['lot_id'], unique=False)
        batch_op.create_foreign_key(batch_op.f('fk_purchases_lot_id_product_lots'), 'product_lots', ['lot_id'], ['id'], ondelete='SET NULL')



def downgrade() -> None:
    with op.batch_alter_table('purchases', schema=None) as batch_op:
        batch_op.drop_constraint(batch_op.f('fk_purchases_lot_id_product_lots'), type_='foreignkey')
        batch_op.drop_index(batch_op.f('ix_purchases_lot_id'))
        batch_op.drop_column('lot_id')

    with op.batch_alter_table('devices', schema=None) as batch_op:
        batch_op.drop_constraint(batch_op.f('fk_devices_monitors_lot_id_product_lots'), type_='foreignkey')
        batch_op.drop_column('monitors_lot_id')

    with op.batch_alter_table('proactive_messages', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_proactive_messages_status'))
        batch_op.drop_index(batch_op.f('ix_proactive_messages_customer_id'))

    op.drop_table('proactive_messages')
    op.drop_table('device_rule_states')
    with op.batch_alter_table('device_messages', schema=None) as batch_op:
        batch_op.drop_index('ix_device_messages_latest')

    op.drop_table('device_messages')
    op.drop_table('device_credentials')
    with op.batch_alter_table('telemetry_rules', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_telemetry_rules_model_id'))

    op.drop_table('telemetry_rules')
    op.drop_table('product_lots')
    op.drop_table('ingest_counters')
    with op.batch_alter_table('dead_letters', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_dead_letters_received_at'))
        batch_op.drop_index(batch_op.f('ix_dead_letters_reason'))

    op.drop_table('dead_letters')
