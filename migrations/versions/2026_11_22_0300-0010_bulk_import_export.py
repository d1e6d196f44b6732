"""Bulk import runs and FHIR bulk export jobs (issue 5)

Revision ID: 0010
Revises: 0009
Create Date: 2026-11-22 03:00:00

Import runs (keyed by file hash and facility) with their rejected rows (row, field, reason code:
never a value), and $export jobs with their snapshot (resource ids only). No patient data.
"""
from typing import Sequence, Union

from alembic import op
import sqlalchemy as sa

revision: str = '0010'
down_revision: Union[str, None] = '0009'
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None


def upgrade() -> None:
    op.create_table('bulk_export_jobs',
    sa.Column('id', sa.Uuid(), nullable=False),
    sa.Column('user_id', sa.Uuid(), nullable=False),
    sa.Column('scope_level', sa.String(length=16), nullable=False),
    sa.Column('scope_code', sa.String(length=32), nullable=False),
    sa.Column('types', sa.JSON(), nullable=False),
    sa.Column('since', sa.DateTime(timezone=True), nullable=True),
    sa.Column('request_url', sa.String(length=500), nullable=False),
    sa.Column('transaction_time', sa.DateTime(timezone=True), nullable=False),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('cursor', sa.JSON(), nullable=False),
    sa.Column('counts', sa.JSON(), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('expires_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_bulk_export_jobs'))
    )
    with op.batch_alter_table('bulk_export_jobs', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_bulk_export_jobs_expires_at'), ['expires_at'], unique=False)
        batch_op.create_index(batch_op.f('ix_bulk_export_jobs_user_id'), ['user_id'], unique=False)

    op.create_table('bulk_export_items',
    sa.Column('job_id', sa.Uuid(), nullable=False),
    sa.Column('resource_type', sa.String(length=16), nullable=False),
    sa.Column('seq', sa.Integer(), nullable=False),
    sa.Column('resource_id', sa.Uuid(), nullable=False),
    sa.Column('patient_id', sa.Uuid(), nullable=False),
    sa.ForeignKeyConstraint(['job_id'], ['bulk_export_jobs.id'], name=op.f('fk_bulk_export_items_job_id_bulk_export_jobs')),
    sa.PrimaryKeyConstraint('job_id', 'resource_type', 'seq', name=op.f('pk_bulk_export_items'))
    )
    op.create_table('import_runs',
    sa.Column('id', sa.Uuid(), nullable=False),
    sa.Column('file_sha256', sa.String(length=64), nullable=False),
    sa.Column('file_format', sa.String(length=24), nullable=False),
    sa.Column('facility', sa.String(length=32), nullable=False),
    sa.Column('custodian', sa.String(length=32), nullable=False),
    sa.Column('user_id', sa.Uuid(), nullable=False),
    sa.Column('username', sa.String(length=64), nullable=False),
    sa.Column('operator', sa.String(length=64), nullable=False),
    sa.Column('chunk_size', sa.Integer(), nullable=False),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('rows_done', sa.Integer(), nullable=False),
    sa.Column('imported', sa.Integer(), nullable=False),
    sa.Column('rejected', sa.Integer(), nullable=False),
    sa.Column('started_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['facility'], ['facilities.code'], name=op.f('fk_import_runs_facility_facilities')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_import_runs')),
    sa.UniqueConstraint('file_sha256', 'facility', name=op.f('uq_import_runs_file_sha256_facility'))
    )
    op.create_table('import_row_errors',
    sa.Column('run_id', sa.Uuid(), nullable=False),
    sa.Column('row', sa.Integer(), nullable=False),
    sa.Column('field', sa.String(length=64), nullable=False),
    sa.Column('reason', sa.String(length=48), nullable=False),
    sa.ForeignKeyConstraint(['run_id'], ['import_runs.id'], name=op.f('fk_import_row_errors_run_id_import_runs')),
    sa.PrimaryKeyConstraint('run_id', 'row', 'field', name=op.f('pk_import_row_errors'))
    )


def downgrade() -> None:
    op.drop_table('import_row_errors')
    op.drop_table('import_runs')
    op.drop_table('bulk_export_items')
    with op.batch_alter_table('bulk_export_jobs', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_bulk_export_jobs_user_id'))
        batch_op.drop_index(batch_op.f('ix_bulk_export_jobs_expires_at'))

    op.drop_table('bulk_export_jobs')
