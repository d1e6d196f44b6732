"""Cross-province linkage between provincial nodes (issue 13 item 7)

Revision ID: 0034
Revises: 0033
Create Date: 2026-12-03 09:20:00

On a province node, `link_remote_candidates` (a pair the national comparer found between a local
record and another node's record: ids, similarity, grade) and an index for the incremental pull
of `link_encodings`. On the national comparer, `link_national_encodings`, `_cursors` and `_pairs`
(registry/linkage/node_link_models.py). No names or identifiers in any of them.
"""
from typing import Sequence, Union

from alembic import op
import sqlalchemy as sa


revision: str = '0034'
down_revision: Union[str, None] = '0033'
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None


def upgrade() -> None:
    op.create_table('link_national_cursors',
    sa.Column('node', sa.String(length=16), nullable=False),
    sa.Column('cursor', sa.String(length=120), nullable=False),
    sa.Column('pulled_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('node', name=op.f('pk_link_national_cursors'))
    )
    op.create_table('link_national_encodings',
    sa.Column('node', sa.String(length=16), nullable=False),
    sa.Column('record_id', sa.Uuid(), nullable=False),
    sa.Column('block', sa.String(length=24), nullable=False),
    sa.Column('clk', sa.LargeBinary(), nullable=False),
    sa.Column('pulled_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('node', 'record_id', name=op.f('pk_link_national_encodings'))
    )
    with op.batch_alter_table('link_national_encodings', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_link_national_encodings_block'), ['block'], unique=False)

    op.create_table('link_national_pairs',
    sa.Column('left_node', sa.String(length=16), nullable=False),
    sa.Column('left_id', sa.Uuid(), nullable=False),
    sa.Column('right_node', sa.String(length=16), nullable=False),
    sa.Column('right_id', sa.Uuid(), nullable=False),
    sa.Column('similarity', sa.Float(), nullable=False),
    sa.Column('grade', sa.String(length=16), nullable=False),
    sa.Column('levels', sa.JSON(), nullable=False),
    sa.Column('left_stored', sa.Boolean(), nullable=False),
    sa.Column('right_stored', sa.Boolean(), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('left_node', 'left_id', 'right_node', 'right_id', name=op.f('pk_link_national_pairs'))
    )
    op.create_table('link_remote_candidates',
    sa.Column('id', sa.Uuid(), nullable=False),
    sa.Column('local_id', sa.Uuid(), nullable=False),
    sa.Column('remote_node', sa.String(length=16), nullable=False),
    sa.Column('remote_id', sa.Uuid(), nullable=False),
    sa.Column('similarity', sa.Float(), nullable=False),
    sa.Column('grade', sa.String(length=16), nullable=False),
    sa.Column('levels', sa.JSON(), nullable=False),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('version', sa.Integer(), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['local_id'], ['patients.id'], name=op.f('fk_link_remote_candidates_local_id_patients')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_link_remote_candidates')),
    sa.UniqueConstraint('local_id', 'remote_node', 'remote_id', name=op.f('uq_link_remote_candidates_local_id_remote_node_remote_id'))
    )
    with op.batch_alter_table('link_remote_candidates', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_link_remote_candidates_local_id'), ['local_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_link_remote_candidates_status_grade'), ['status', 'grade'], unique=False)

    with op.batch_alter_table('link_encodings', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_link_encodings_created_at_patient_id'), ['created_at', 'patient_id'], unique=False)



def downgrade() -> None:
    with op.batch_alter_table('link_encodings', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_link_encodings_created_at_patient_id'))

    with op.batch_alter_table('link_remote_candidates', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_link_remote_candidates_status_grade'))
        batch_op.drop_index(batch_op.f('ix_link_remote_candidates_local_id'))

    op.drop_table('link_remote_candidates')
    op.drop_table('link_national_pairs')
    with op.batch_alter_table('link_national_encodings', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_link_national_encodings_block'))

    op.drop_table('link_national_encodings')
    op.drop_table('link_national_cursors')
