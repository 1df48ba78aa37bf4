"""privacy: consent history, erasure requests, staff access audit, job leases

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-30 09:50:00
"""
from __future__ import annotations

from alembic import op
import sqlalchemy as sa


revision = '0006'
down_revision = '0005'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        'consent_events',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('customer_id', sa.Integer(), nullable=False),
        sa.Column('kind', sa.String(length=16), nullable=False),
        sa.Column('granted', sa.Boolean(), nullable=False),
        sa.Column('source', sa.String(length=16), nullable=False),
        sa.Column('actor', sa.String(length=64), nullable=False),
        sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(['customer_id'], ['customers.id'], name=op.f('fk_consent_events_customer_id_customers'),
                                ondelete='CASCADE'),
        sa.PrimaryKeyConstraint('id', name=op.f('pk_consent_events')),
    )
    op.create_index(op.f('ix_consent_events_customer_id'), 'consent_events', ['customer_id'])
    op.create_table(
        'erasure_requests',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('customer_id', sa.Integer(), nullable=False),
        sa.Column('active_customer_id', sa.Integer(), nullable=True),
        sa.Column('requested_by', sa.String(length=64), nullable=False),
        sa.Column('source', sa.String(length=16), nullable=False),
        sa.Column('status', sa.String(length=16), nullable=False),
        sa.Column('not_before', sa.DateTime(timezone=True), nullable=False),
        sa.Column('lease_until', sa.DateTime(timezone=True), nullable=True),
        sa.Column('holder', sa.String(length=128), nullable=True),
        sa.Column('runs', sa.Integer(), nullable=False),
        sa.Column('steps', sa.JSON(), nullable=False),
        sa.Column('work', sa.JSON(), nullable=False),
        sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
        sa.Column('completed_at', sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint('id', name=op.f('pk_erasure_requests')),
        sa.UniqueConstraint('active_customer_id', name=op.f('uq_erasure_requests_active_customer_id')),
    )
    op.create_index(op.f('ix_erasure_requests_status'), 'erasure_requests', ['status'])
    op.create_index(op.f('ix_erasure_requests_customer_id'), 'erasure_requests', ['customer_id'])
    op.create_table(
        'access_audit',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('actor', sa.String(length=64), nullable=False),
        sa.Column('action', sa.String(length=32), nullable=False),
        sa.Column('customer_id', sa.Integer(), nullable=True),
        sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint('id', name=op.f('pk_access_audit')),
    )
    op.create_index(op.f('ix_access_audit_customer_id'), 'access_audit', ['customer_id'])
    op.create_index(op.f('ix_access_audit_created_at'), 'access_audit', ['created_at'])
    op.create_table(
        'job_leases',
        sa.Column('name', sa.String(length=64), nullable=False),
        sa.Column('holder', sa.String(length=128), nullable=False),
        sa.Column('expires_at', sa.DateTime(timezone=True), nullable=False),
        sa.Column('last_run_at', sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint('name', name=op.f('pk_job_leases')),
    )
    # Retention deletes raw telemetry by age: without this index it scans the whole table.
    op.create_index('ix_device_messages_received_at', 'device_messages', ['received_at'])


def downgrade() -> None:
    op.drop_index('ix_device_messages_received_at', table_name='device_messages')
    op.drop_table('job_leases')
    op.drop_index(op.f('ix_access_audit_created_at'), table_name='access_audit')
    op.drop_index(op.f('ix_access_audit_customer_id'), table_name='access_audit')
    op.drop_table('access_audit')
    op.drop_index(op.f('ix_erasure_requests_customer_id'), table_name='erasure_requests')
    op.drop_index(op.f('ix_erasure_requests_status'), table_name='erasure_requests')
    op.drop_table('erasure_requests')
    op.drop_index(op.f('ix_consent_events_customer_id'), table_name='consent_events')
    op.drop_table('consent_events')
