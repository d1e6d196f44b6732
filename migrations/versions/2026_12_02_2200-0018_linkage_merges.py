"""Record linkage: merges and unmerges by a data steward (issue 13)

Revision ID: 0018
Revises: 0013
Create Date: 2026-12-02 22:00:00

`patients.merged_into` (the survivor of a merged record), `immunizations.original_patient_id`
(the owner of a dose a merge moved) and `link_merges` (one row per merge, listing the moved dose
ids, so that an unmerge restores every owner). No patient data.
"""
from typing import Sequence, Union

from alembic import op
import sqlalchemy as sa

revision: str = '0018'
down_revision: Union[str, None] = '0013'
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None


def upgrade() -> None:
    with op.batch_alter_table('patients', schema=None) as batch_op:
        batch_op.add_column(sa.Column('merged_into', sa.Uuid(), nullable=True))
        batch_op.create_index(batch_op.f('ix_patients_merged_into'), ['merged_into'], unique=False)
        batch_op.create_foreign_key(batch_op.f('fk_patients_merged_into_patients'), 'patients', ['merged_into'], ['id'])
    with op.batch_alter_table('immunizations', schema=None) as batch_op:
        batch_op.add_column(sa.Column('original_patient_id', sa.Uuid(), nullable=True))
        batch_op.create_foreign_key(batch_op.f('fk_immunizations_original_patient_id_patients'), 'patients',
                                    ['original_patient_id'], ['id'])
    op.create_table('link_merges',
    sa.Column('id', sa.Uuid(), nullable=False),
    sa.Column('version', sa.Integer(), nullable=False),
    sa.Column('candidate_id', sa.Uuid(), nullable=True),
    sa.Column('survivor_id', sa.Uuid(), nullable=False),
    sa.Column('merged_id', sa.Uuid(), nullable=False),
    sa.Column('moved_doses', sa.JSON(), nullable=False),
    sa.Column('merged_by', sa.Uuid(), nullable=False),
    sa.Column('merged_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('unmerged_by', sa.Uuid(), nullable=True),
    sa.Column('unmerged_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('unmerge_moved', sa.JSON(), nullable=True),
    sa.ForeignKeyConstraint(['candidate_id'], ['link_candidates.id'], name=op.f('fk_link_merges_candidate_id_link_candidates')),
    sa.ForeignKeyConstraint(['merged_id'], ['patients.id'], name=op.f('fk_link_merges_merged_id_patients')),
    sa.ForeignKeyConstraint(['survivor_id'], ['patients.id'], name=op.f('fk_link_merges_survivor_id_patients')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_link_merges'))
    )
    with op.batch_alter_table('link_merges', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_link_merges_merged_at_id'), ['merged_at', 'id'], unique=False)
        batch_op.create_index(batch_op.f('ix_link_merges_merged_id'), ['merged_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_link_merges_survivor_id'), ['survivor_id'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('link_merges', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_link_merges_survivor_id'))
        batch_op.drop_index(batch_op.f('ix_link_merges_merged_id'))
        batch_op.drop_index(batch_op.f('ix_link_merges_merged_at_id'))
    op.drop_table('link_merges')
    with op.batch_alter_table('immunizations', schema=None) as batch_op:
        batch_op.drop_constraint(batch_op.f('fk_immunizations_original_patient_id_patients'), type_='foreignkey')
        batch_op.drop_column('original_patient_id')
    with op.batch_alter_table('patients', schema=None) as batch_op:
        batch_op.drop_constraint(batch_op.f('fk_patients_merged_into_patients'), type_='foreignkey')
        batch_op.drop_index(batch_op.f('ix_patients_merged_into'))
        batch_op.drop_column('merged_into')
