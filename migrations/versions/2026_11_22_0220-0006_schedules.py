"""Immunization schedules as versioned data (issue 4)

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-22 02:20:00

One row per loaded schedule version and jurisdiction (country or province), with the whole
document as loaded. No patient data.
"""
from typing import Sequence, Union

from alembic import op
import sqlalchemy as sa

revision: str = '0006'
down_revision: Union[str, None] = '0005'
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None


def upgrade() -> None:
    op.create_table('schedules',
    sa.Column('id', sa.Uuid(), nullable=False),
    sa.Column('code', sa.String(length=40), nullable=False),
    sa.Column('version', sa.String(length=40), nullable=False),
    sa.Column('jurisdiction_code', sa.String(length=32), nullable=False),
    sa.Column('effective_from', sa.Date(), nullable=False),
    sa.Column('document', sa.JSON(), nullable=False),
    sa.Column('loaded_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_schedules')),
    sa.UniqueConstraint('code', 'version', 'jurisdiction_code', name=op.f('uq_schedules_code_version_jurisdiction_code'))
    )
    with op.batch_alter_table('schedules', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_schedules_jurisdiction_code_effective_from'), ['jurisdiction_code', 'effective_from'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('schedules', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_schedules_jurisdiction_code_effective_from'))
    op.drop_table('schedules')
