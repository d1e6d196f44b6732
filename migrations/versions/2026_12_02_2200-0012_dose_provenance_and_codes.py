"""Dose provenance and vaccine codes (issue 12)

Revision ID: 0012
Revises: 0014
Create Date: 2026-12-02 22:00:00

Reported doses keep their provenance (primary source, report origin, where, by whom, when the
source recorded them, an approximate occurrence), free texts encrypted; every dose keeps the
vaccine code as sent; a combination product's further EPI vaccines are component rows.
"""
from typing import Sequence, Union

from alembic import op
import sqlalchemy as sa

revision: str = '0012'
down_revision: Union[str, None] = '0014'
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None


def upgrade() -> None:
    with op.batch_alter_table('immunizations', schema=None) as batch_op:
        batch_op.add_column(sa.Column('primary_source', sa.Boolean(), server_default=sa.true(), nullable=False))
        batch_op.add_column(sa.Column('administered_here', sa.Boolean(), server_default=sa.true(), nullable=False))
        batch_op.add_column(sa.Column('report_origin', sa.String(length=24), nullable=True))
        batch_op.add_column(sa.Column('performer_facility', sa.String(length=64), nullable=True))
        batch_op.add_column(sa.Column('performer_text_ct', sa.LargeBinary(), nullable=True))
        batch_op.add_column(sa.Column('location_text_ct', sa.LargeBinary(), nullable=True))
        batch_op.add_column(sa.Column('country', sa.String(length=2), nullable=True))
        batch_op.add_column(sa.Column('occurrence_text_ct', sa.LargeBinary(), nullable=True))
        batch_op.add_column(sa.Column('source_recorded', sa.String(length=40), nullable=True))
        batch_op.add_column(sa.Column('fhir_source_ct', sa.LargeBinary(), nullable=True))
        batch_op.add_column(sa.Column('code_system', sa.String(length=200), nullable=True))
        batch_op.add_column(sa.Column('code', sa.String(length=64), nullable=True))
        batch_op.add_column(sa.Column('code_text_ct', sa.LargeBinary(), nullable=True))
        batch_op.add_column(sa.Column('dose_number_inferred', sa.Boolean(), server_default=sa.false(), nullable=False))
        batch_op.add_column(sa.Column('component_of', sa.Uuid(), nullable=True))
        batch_op.create_index(batch_op.f('ix_immunizations_component_of'), ['component_of'], unique=False)
        batch_op.create_foreign_key(batch_op.f('fk_immunizations_component_of_immunizations'), 'immunizations',
                                    ['component_of'], ['id'])


def downgrade() -> None:
    with op.batch_alter_table('immunizations', schema=None) as batch_op:
        batch_op.drop_constraint(batch_op.f('fk_immunizations_component_of_immunizations'), type_='foreignkey')
        batch_op.drop_index(batch_op.f('ix_immunizations_component_of'))
        for column in ('component_of', 'dose_number_inferred', 'code_text_ct', 'code', 'code_system', 'fhir_source_ct',
                       'source_recorded', 'occurrence_text_ct', 'country', 'location_text_ct', 'performer_text_ct',
                       'performer_facility', 'report_origin', 'administered_here', 'primary_source'):
            batch_op.drop_column(column)
