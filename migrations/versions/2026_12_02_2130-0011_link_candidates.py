"""Record-linkage candidate pairs (issue 13)

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-02 21:30:00

Pairs of patient ids that may be the same child, with scores, comparison levels (integers) and
the steward's decision. No patient data.
"""
from typing import Sequence, Union

from alembic import op
import sqlalchemy as sa

revision: str = '0011'
down_revision: Union[str, None] = '0010'
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None


def upgrade() -> None:
    op.create_table('link_candidates',
    sa.Column('id', sa.Uuid(), nullable=False),
    sa.Column('version', sa.Integer(), nullable=False),
    sa.Column('left_id', sa.Uuid(), nullable=False),
    sa.Column('right_id', sa.Uuid(), nullable=False),
    sa.Column('match_weight', sa.Float(), nullable=False),
    sa.Column('match_probability', sa.Float(), nullable=False),
    sa.Column('grade', sa.String(length=16), nullable=False),
    sa.Column('levels', sa.JSON(), nullable=False),
    sa.Column('model_version', sa.String(length=40), nullable=False),
    sa.Column('source', sa.String(length=16), nullable=False),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('decided_by', sa.Uuid(), nullable=True),
    sa.Column('decided_at', sa.DateTime(timezone=True), nullable=True),
    sa.ForeignKeyConstraint(['left_id'], ['patients.id'], name=op.f('fk_link_candidates_left_id_patients')),
    sa.ForeignKeyConstraint(['right_id'], ['patients.id'], name=op.f('fk_link_candidates_right_id_patients')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_link_candidates')),
    sa.UniqueConstraint('left_id', 'right_id', name=op.f('uq_link_candidates_left_id_right_id'))
    )
    with op.batch_alter_table('link_candidates', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_link_candidates_left_id'), ['left_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_link_candidates_right_id'), ['right_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_link_candidates_status_grade'), ['status', 'grade'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('link_candidates', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_link_candidates_status_grade'))
        batch_op.drop_index(batch_op.f('ix_link_candidates_right_id'))
        batch_op.drop_index(batch_op.f('ix_link_candidates_left_id'))
    op.drop_table('link_candidates')
