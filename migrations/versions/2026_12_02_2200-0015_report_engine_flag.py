"""Coverage aggregates: which children the schedule engine judged (issue 18)

Revision ID: 0015
Revises: 0011
Create Date: 2026-12-02 22:00:00

`report_child_status.engine` is 1 for a child whose valid doses were judged by the schedule
engine in Python rather than by the set-based SQL (registry/reports/judge.py). Run
`nhr reports rebuild` after upgrading: until then every existing row reads 0, and counts keep
the old (possibly undercounted) verdicts.
"""
from typing import Sequence, Union

from alembic import op
import sqlalchemy as sa

revision: str = '0015'
down_revision: Union[str, None] = '0011'
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None


def upgrade() -> None:
    with op.batch_alter_table('report_child_status', schema=None) as batch_op:
        batch_op.add_column(sa.Column('engine', sa.Integer(), server_default='0', nullable=False))


def downgrade() -> None:
    with op.batch_alter_table('report_child_status', schema=None) as batch_op:
        batch_op.drop_column('engine')
