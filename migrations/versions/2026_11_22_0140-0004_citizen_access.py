"""Citizen access: patient access codes (issue 3)

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-22 01:40:00

The access code a guardian uses to log in to the citizen view is stored only as an argon2id
hash, one row per patient; `generation` counts reissues (citizen tokens carry it).
"""
from typing import Sequence, Union

from alembic import op
import sqlalchemy as sa

revision: str = '0004'
down_revision: Union[str, None] = '0003'
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None


def upgrade() -> None:
    op.create_table('patient_access_codes',
    sa.Column('patient_id', sa.Uuid(), nullable=False),
    sa.Column('code_hash', sa.String(length=255), nullable=False),
    sa.Column('issued_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('issued_by_user_id', sa.Uuid(), nullable=False),
    sa.Column('generation', sa.Integer(), nullable=False),
    sa.ForeignKeyConstraint(['patient_id'], ['patients.id'], name=op.f('fk_patient_access_codes_patient_id_patients')),
    sa.PrimaryKeyConstraint('patient_id', name=op.f('pk_patient_access_codes'))
    )


def downgrade() -> None:
    op.drop_table('patient_access_codes')
