"""Newborns before naming, doses not given (issue 12, items 3 and 4)

Revision ID: 0013
Revises: 0015
Create Date: 2026-12-02 22:00:00

- patients.unnamed: a child registered before naming ("Baby of <mother>"); given_name_ct may
  then be NULL. patients.birth_facility: where the child was born (a facility code, in clear
  like home_facility).
- immunizations.not_done_reason: the coded reason of a dose recorded `not-done` (refusal,
  contraindication, stock-out, child absent...): a code from the versioned value set
  registry/immunizations/data/not-done-reasons-*.json, in clear so reports count it without
  decrypting anything. NULL for every other status.
- report_dhis2_quality_mappings: data-quality metrics -> DHIS2 data elements, per province or
  for the country (reference data, no patient data).
"""
from typing import Sequence, Union

from alembic import op
import sqlalchemy as sa

revision: str = '0013'
down_revision: Union[str, None] = '0015'
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None


def upgrade() -> None:
    op.create_table('report_dhis2_quality_mappings',
    sa.Column('jurisdiction_code', sa.String(length=32), nullable=False),
    sa.Column('document', sa.JSON(), nullable=False),
    sa.Column('loaded_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('loaded_by', sa.String(length=64), nullable=False),
    sa.PrimaryKeyConstraint('jurisdiction_code', name=op.f('pk_report_dhis2_quality_mappings'))
    )
    with op.batch_alter_table('patients', schema=None) as batch_op:
        batch_op.add_column(sa.Column('unnamed', sa.Boolean(), server_default=sa.false(), nullable=False))
        batch_op.add_column(sa.Column('birth_facility', sa.String(length=32), nullable=True))
        batch_op.alter_column('given_name_ct', existing_type=sa.LargeBinary(), nullable=True)
        batch_op.create_foreign_key(batch_op.f('fk_patients_birth_facility_facilities'), 'facilities', ['birth_facility'], ['code'])
    with op.batch_alter_table('immunizations', schema=None) as batch_op:
        batch_op.add_column(sa.Column('not_done_reason', sa.String(length=32), nullable=True))


def downgrade() -> None:
    op.drop_table('report_dhis2_quality_mappings')
    with op.batch_alter_table('immunizations', schema=None) as batch_op:
        batch_op.drop_column('not_done_reason')
    with op.batch_alter_table('patients', schema=None) as batch_op:
        batch_op.drop_constraint(batch_op.f('fk_patients_birth_facility_facilities'), type_='foreignkey')
        batch_op.alter_column('given_name_ct', existing_type=sa.LargeBinary(), nullable=False)
        batch_op.drop_column('birth_facility')
        batch_op.drop_column('unnamed')
