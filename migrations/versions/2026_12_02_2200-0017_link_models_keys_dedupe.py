"""Matching engine: versioned models, blocking keys, dedupe runs, cross-province encodings (issue 13)

Revision ID: 0017
Revises: 0012
Create Date: 2026-12-02 22:00:00

Model parameters (probabilities), keyed hashes for blocking, and run checkpoints. No patient data.
"""
from typing import Sequence, Union

from alembic import op
import sqlalchemy as sa

revision: str = '0017'
down_revision: Union[str, None] = '0012'
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None


def upgrade() -> None:
    op.create_table('link_models',
    sa.Column('version', sa.String(length=40), nullable=False),
    sa.Column('method', sa.String(length=16), nullable=False),
    sa.Column('parameters', sa.JSON(), nullable=False),
    sa.Column('thresholds', sa.JSON(), nullable=False),
    sa.Column('active', sa.Boolean(), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('note', sa.String(length=200), nullable=True),
    sa.PrimaryKeyConstraint('version', name=op.f('pk_link_models'))
    )
    op.create_table('link_keys',
    sa.Column('patient_id', sa.Uuid(), nullable=False),
    sa.Column('kind', sa.String(length=16), nullable=False),
    sa.Column('custodian', sa.String(length=32), nullable=False),
    sa.Column('bidx', sa.Integer(), nullable=False),
    sa.ForeignKeyConstraint(['patient_id'], ['patients.id'], name=op.f('fk_link_keys_patient_id_patients')),
    sa.PrimaryKeyConstraint('patient_id', 'kind', name=op.f('pk_link_keys'))
    )
    with op.batch_alter_table('link_keys', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_link_keys_bidx'), ['bidx'], unique=False)
    op.create_table('dedupe_runs',
    sa.Column('id', sa.Uuid(), nullable=False),
    sa.Column('province', sa.String(length=32), nullable=False),
    sa.Column('model_version', sa.String(length=40), nullable=False),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('blocks_total', sa.Integer(), nullable=False),
    sa.Column('blocks_done', sa.JSON(), nullable=False),
    sa.Column('pairs_scored', sa.Integer(), nullable=False),
    sa.Column('proposed', sa.Integer(), nullable=False),
    sa.Column('started_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('finished_at', sa.DateTime(timezone=True), nullable=True),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_dedupe_runs'))
    )
    with op.batch_alter_table('dedupe_runs', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_dedupe_runs_province_status'), ['province', 'status'], unique=False)


    op.create_table('link_encodings',
    sa.Column('patient_id', sa.Uuid(), nullable=False),
    sa.Column('custodian', sa.String(length=32), nullable=False),
    sa.Column('block', sa.String(length=24), nullable=False),
    sa.Column('clk', sa.LargeBinary(), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['patient_id'], ['patients.id'], name=op.f('fk_link_encodings_patient_id_patients')),
    sa.PrimaryKeyConstraint('patient_id', name=op.f('pk_link_encodings'))
    )
    with op.batch_alter_table('link_encodings', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_link_encodings_block_custodian'), ['block', 'custodian'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('link_encodings', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_link_encodings_block_custodian'))
    op.drop_table('link_encodings')
    with op.batch_alter_table('dedupe_runs', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_dedupe_runs_province_status'))
    op.drop_table('dedupe_runs')
    with op.batch_alter_table('link_keys', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_link_keys_bidx'))
    op.drop_table('link_keys')
    op.drop_table('link_models')
