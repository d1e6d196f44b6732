"""Dose validation overrides and adverse events (issue 4)

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-22 03:00:00

A dose recorded with an override keeps the rule it broke and the encrypted reason; adverse
events following immunization get their own table.
"""
from typing import Sequence, Union

from alembic import op
import sqlalchemy as sa

revision: str = '0007'
down_revision: Union[str, None] = '0006'
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None


def upgrade() -> None:
    with op.batch_alter_table('immunizations', schema=None) as batch_op:
        batch_op.add_column(sa.Column('override_rule', sa.String(length=32), nullable=True))
        batch_op.add_column(sa.Column('override_reason_ct', sa.LargeBinary(), nullable=True))
    op.create_table('adverse_events',
    sa.Column('id', sa.Uuid(), nullable=False),
    sa.Column('version', sa.Integer(), nullable=False),
    sa.Column('immunization_id', sa.Uuid(), nullable=False),
    sa.Column('patient_id', sa.Uuid(), nullable=False),
    sa.Column('custodian', sa.String(length=32), nullable=False),
    sa.Column('province', sa.String(length=32), nullable=False),
    sa.Column('district', sa.String(length=32), nullable=False),
    sa.Column('facility', sa.String(length=32), nullable=False),
    sa.Column('vaccine', sa.String(length=16), nullable=False),
    sa.Column('lot_number', sa.String(length=40), nullable=True),
    sa.Column('onset_date', sa.Date(), nullable=False),
    sa.Column('symptoms', sa.JSON(), nullable=False),
    sa.Column('seriousness', sa.String(length=32), nullable=False),
    sa.Column('outcome', sa.String(length=32), nullable=False),
    sa.Column('coding', sa.String(length=32), nullable=False),
    sa.Column('notes_ct', sa.LargeBinary(), nullable=True),
    sa.Column('reported_by', sa.Uuid(), nullable=False),
    sa.Column('reported_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['facility'], ['facilities.code'], name=op.f('fk_adverse_events_facility_facilities')),
    sa.ForeignKeyConstraint(['immunization_id'], ['immunizations.id'], name=op.f('fk_adverse_events_immunization_id_immunizations')),
    sa.ForeignKeyConstraint(['patient_id'], ['patients.id'], name=op.f('fk_adverse_events_patient_id_patients')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_adverse_events'))
    )
    with op.batch_alter_table('adverse_events', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_adverse_events_district_vaccine_lot_number'), ['district', 'vaccine', 'lot_number'], unique=False)
        batch_op.create_index(batch_op.f('ix_adverse_events_facility_reported_at_id'), ['facility', 'reported_at', 'id'], unique=False)
        batch_op.create_index(batch_op.f('ix_adverse_events_immunization_id'), ['immunization_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_adverse_events_patient_id'), ['patient_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_adverse_events_reported_at_id'), ['reported_at', 'id'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('adverse_events', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_adverse_events_reported_at_id'))
        batch_op.drop_index(batch_op.f('ix_adverse_events_patient_id'))
        batch_op.drop_index(batch_op.f('ix_adverse_events_immunization_id'))
        batch_op.drop_index(batch_op.f('ix_adverse_events_facility_reported_at_id'))
        batch_op.drop_index(batch_op.f('ix_adverse_events_district_vaccine_lot_number'))
    op.drop_table('adverse_events')
    with op.batch_alter_table('immunizations', schema=None) as batch_op:
        batch_op.drop_column('override_reason_ct')
        batch_op.drop_column('override_rule')
