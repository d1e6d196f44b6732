"""Linkage between nodes: a feed safe under concurrent encoders, tombstones, withdrawn pairs (issue 13 item 7)

Revision ID: 0043
Revises: 0038
Create Date: 2026-12-03 13:00:00

On a province node: `link_encodings.feed_seq` (the feed position, assigned under the
custodian's row in `link_feed_counters`, so encodings commit in feed order) and
`link_encoding_tombstones` (records whose encoding was removed, in the same feed). Existing
encodings get position 0 (pulled again once, in id order, by a comparer holding a cursor of the
old form). On the comparer: `link_national_pairs.withdrawn`. No names or identifiers.
"""
from typing import Sequence, Union

from alembic import op
import sqlalchemy as sa


revision: str = '0043'
down_revision: Union[str, None] = '0038'
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None


def upgrade() -> None:
    op.create_table('link_encoding_tombstones',
    sa.Column('patient_id', sa.Uuid(), nullable=False),
    sa.Column('custodian', sa.String(length=32), nullable=False),
    sa.Column('feed_seq', sa.BigInteger(), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('patient_id', name=op.f('pk_link_encoding_tombstones'))
    )
    with op.batch_alter_table('link_encoding_tombstones', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_link_encoding_tombstones_custodian_feed_seq_patient_id'),
                              ['custodian', 'feed_seq', 'patient_id'], unique=False)
    op.create_table('link_feed_counters',
    sa.Column('custodian', sa.String(length=32), nullable=False),
    sa.Column('seq', sa.BigInteger(), nullable=False),
    sa.PrimaryKeyConstraint('custodian', name=op.f('pk_link_feed_counters'))
    )
    with op.batch_alter_table('link_encodings', schema=None) as batch_op:
        batch_op.add_column(sa.Column('feed_seq', sa.BigInteger(), server_default='0', nullable=False))
        batch_op.create_index(batch_op.f('ix_link_encodings_custodian_feed_seq_patient_id'),
                              ['custodian', 'feed_seq', 'patient_id'], unique=False)
    with op.batch_alter_table('link_national_pairs', schema=None) as batch_op:
        batch_op.add_column(sa.Column('withdrawn', sa.Boolean(), server_default=sa.false(), nullable=False))


def downgrade() -> None:
    with op.batch_alter_table('link_national_pairs', schema=None) as batch_op:
        batch_op.drop_column('withdrawn')
    with op.batch_alter_table('link_encodings', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_link_encodings_custodian_feed_seq_patient_id'))
        batch_op.drop_column('feed_seq')
    op.drop_table('link_feed_counters')
    with op.batch_alter_table('link_encoding_tombstones', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_link_encoding_tombstones_custodian_feed_seq_patient_id'))
    op.drop_table('link_encoding_tombstones')
