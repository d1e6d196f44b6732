"""Jurisdictions can be retired (issue 15)

Revision ID: 0025
Revises: 0020
Create Date: 2026-12-03 03:00:00

`jurisdictions.active`: false once `nhr jurisdictions retire CODE` retired the node (no new
registrations, accounts, facilities or child nodes there; still read and counted in reports).
Every existing node stays active.
"""
from typing import Sequence, Union

from alembic import op
import sqlalchemy as sa

revision: str = '0025'
down_revision: Union[str, None] = '0020'
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None


def upgrade() -> None:
    with op.batch_alter_table('jurisdictions') as batch:
        batch.add_column(sa.Column('active', sa.Boolean(), server_default=sa.true(), nullable=False))


def downgrade() -> None:
    with op.batch_alter_table('jurisdictions') as batch:
        batch.drop_column('active')
