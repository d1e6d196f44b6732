"""Coverage aggregates and target populations (issue 4)

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-22 03:00:00

Maintained aggregates for coverage reports (a status row per child, counts per leaf
jurisdiction, birth month and antigen-dose), the queue of patients whose aggregates are stale,
target population figures and DHIS2 mappings. Nothing here is encrypted: only clear columns
feed it.
"""
from typing import Sequence, Union

from alembic import op
import sqlalchemy as sa

revision: str = '0008'
down_revision: Union[str, None] = '0007'
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None


def upgrade() -> None:
    op.create_table('report_child_status',
    sa.Column('patient_id', sa.Uuid(), nullable=False),
    sa.Column('province', sa.String(length=32), nullable=False),
    sa.Column('district', sa.String(length=32), nullable=False),
    sa.Column('leaf', sa.String(length=32), nullable=False),
    sa.Column('cohort_month', sa.Integer(), nullable=False),
    sa.Column('any_mask', sa.BigInteger(), nullable=False),
    sa.Column('valid_mask', sa.BigInteger(), nullable=False),
    sa.Column('penta1_by_12m', sa.Integer(), nullable=False),
    sa.PrimaryKeyConstraint('patient_id', name=op.f('pk_report_child_status'))
    )

    op.create_table('report_coverage_counts',
    sa.Column('leaf', sa.String(length=32), nullable=False),
    sa.Column('cohort_month', sa.Integer(), nullable=False),
    sa.Column('item', sa.String(length=16), nullable=False),
    sa.Column('province', sa.String(length=32), nullable=False),
    sa.Column('district', sa.String(length=32), nullable=False),
    sa.Column('any_count', sa.Integer(), nullable=False),
    sa.Column('valid_count', sa.Integer(), nullable=False),
    sa.PrimaryKeyConstraint('leaf', 'cohort_month', 'item', name=op.f('pk_report_coverage_counts'))
    )
    with op.batch_alter_table('report_coverage_counts', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_report_coverage_counts_district_cohort_month'), ['district', 'cohort_month'], unique=False)
        batch_op.create_index(batch_op.f('ix_report_coverage_counts_province_cohort_month'), ['province', 'cohort_month'], unique=False)

    op.create_table('report_dhis2_mappings',
    sa.Column('jurisdiction_code', sa.String(length=32), nullable=False),
    sa.Column('document', sa.JSON(), nullable=False),
    sa.Column('loaded_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('loaded_by', sa.String(length=64), nullable=False),
    sa.PrimaryKeyConstraint('jurisdiction_code', name=op.f('pk_report_dhis2_mappings'))
    )
    op.create_table('report_dirty_patients',
    sa.Column('seq', sa.Integer(), autoincrement=True, nullable=False),
    sa.Column('patient_id', sa.Uuid(), nullable=False),
    sa.PrimaryKeyConstraint('seq', name=op.f('pk_report_dirty_patients'))
    )
    op.create_table('report_target_populations',
    sa.Column('jurisdiction_code', sa.String(length=32), nullable=False),
    sa.Column('year', sa.Integer(), nullable=False),
    sa.Column('population', sa.Integer(), nullable=False),
    sa.Column('loaded_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('loaded_by', sa.String(length=64), nullable=False),
    sa.PrimaryKeyConstraint('jurisdiction_code', 'year', name=op.f('pk_report_target_populations'))
    )


def downgrade() -> None:
    op.drop_table('report_target_populations')
    op.drop_table('report_dirty_patients')
    op.drop_table('report_dhis2_mappings')
    with op.batch_alter_table('report_coverage_counts', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_report_coverage_counts_province_cohort_month'))
        batch_op.drop_index(batch_op.f('ix_report_coverage_counts_district_cohort_month'))
    op.drop_table('report_coverage_counts')
    op.drop_table('report_child_status')
