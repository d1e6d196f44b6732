"""Access codes made ahead of registration by `nhr worker` (issue 17)

Revision ID: 0044
Revises: 0043
Create Date: 2026-12-03 16:00:00

`access_code_pool`: per node, a bounded set of ready patient access codes, each its argon2id hash
and the code sealed under the keyring's `access-code-pool` secret (never the code in the clear).
A registration deletes the row it takes in its own transaction (registry/citizens/code_pool.py).
"""
from typing import Sequence, Union

from alembic import op
import sqlalchemy as sa


revision: str = '0044'
down_revision: Union[str, None] = '0043'
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None


def upgrade() -> None:
    op.create_table('access_code_pool',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=True, nullable=False),
    sa.Column('code_hash', sa.String(length=255), nullable=False),
    sa.Column('code_ct', sa.LargeBinary(), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_access_code_pool'))
    )


def downgrade() -> None:
    op.drop_table('access_code_pool')
