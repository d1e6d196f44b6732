"""Per-principal rate-limit windows (issue 18)

Revision ID: 0014
Revises: 0019
Create Date: 2026-12-02 23:00:00

One row per principal (a SHA-256 key, no identity): the current window's number and its hit
count, updated by one UPSERT per request to a patient-data route (registry/rate_limit.py).
UNLOGGED on PostgreSQL: no WAL, so the per-request commit waits for no disk flush; a crash empties
the table, which only restarts the windows.
"""
from typing import Sequence, Union

from alembic import op
import sqlalchemy as sa

revision: str = '0014'
down_revision: Union[str, None] = '0019'
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None


def upgrade() -> None:
    unlogged = ['UNLOGGED'] if op.get_bind().dialect.name == 'postgresql' else []
    op.create_table('rate_limit_windows',
    sa.Column('key', sa.String(length=64), nullable=False),
    sa.Column('period', sa.Integer(), nullable=False),
    sa.Column('hits', sa.Integer(), nullable=False),
    sa.PrimaryKeyConstraint('key', name=op.f('pk_rate_limit_windows')),
    prefixes=unlogged,
    )


def downgrade() -> None:
    op.drop_table('rate_limit_windows')
