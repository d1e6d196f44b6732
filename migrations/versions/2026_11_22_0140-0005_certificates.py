"""Vaccination certificates: issued certificates and revocations (issue 6)

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-22 01:40:00

Issued certificates (UVCI, patient, signer kid, validity, issuer) and their revocations. No patient
data: the signed payload is not stored.
"""
from typing import Sequence, Union

from alembic import op
import sqlalchemy as sa

revision: str = '0005'
down_revision: Union[str, None] = '0004'
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None


def upgrade() -> None:
    op.create_table('issued_certificates',
    sa.Column('uvci', sa.String(length=80), nullable=False),
    sa.Column('patient_id', sa.Uuid(), nullable=False),
    sa.Column('custodian', sa.String(length=32), nullable=False),
    sa.Column('kid', sa.LargeBinary(length=8), nullable=False),
    sa.Column('issued_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('expires_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('issued_by', sa.Uuid(), nullable=False),
    sa.ForeignKeyConstraint(['patient_id'], ['patients.id'], name=op.f('fk_issued_certificates_patient_id_patients')),
    sa.PrimaryKeyConstraint('uvci', name=op.f('pk_issued_certificates'))
    )
    with op.batch_alter_table('issued_certificates', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_issued_certificates_patient_id'), ['patient_id'], unique=False)
    op.create_table('certificate_revocations',
    sa.Column('uvci', sa.String(length=80), nullable=False),
    sa.Column('revoked_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('reason_code', sa.String(length=32), nullable=False),
    sa.Column('revoked_by', sa.Uuid(), nullable=False),
    sa.ForeignKeyConstraint(['uvci'], ['issued_certificates.uvci'], name=op.f('fk_certificate_revocations_uvci_issued_certificates')),
    sa.PrimaryKeyConstraint('uvci', name=op.f('pk_certificate_revocations'))
    )


def downgrade() -> None:
    op.drop_table('certificate_revocations')
    with op.batch_alter_table('issued_certificates', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_issued_certificates_patient_id'))
    op.drop_table('issued_certificates')
