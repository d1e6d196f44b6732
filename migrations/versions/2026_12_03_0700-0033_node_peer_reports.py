"""A provincial node's last good report from each peer (issue 16 item 4)

Revision ID: 0033
Revises: 0032
Create Date: 2026-12-03 07:00:00

`node_peer_reports`: per province and question (cohort, denominator, as-of), the last aggregate
report a peer node released to a national reader, already suppressed by that province, and when
it came. The national report shows a peer that does not answer as `stale` with it (docs/nodes.md).
"""
from typing import Sequence, Union

from alembic import op
import sqlalchemy as sa


revision: str = '0033'
down_revision: Union[str, None] = '0032'
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None


def upgrade() -> None:
    op.create_table(
        'node_peer_reports',
        sa.Column('province', sa.String(16), nullable=False),
        sa.Column('question', sa.String(64), nullable=False),
        sa.Column('report', sa.JSON(), nullable=False),
        sa.Column('fetched_at', sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint('province', 'question'),
    )


def downgrade() -> None:
    op.drop_table('node_peer_reports')
