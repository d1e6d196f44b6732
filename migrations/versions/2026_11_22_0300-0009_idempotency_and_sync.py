"""Idempotency keys and offline sync (issue 5)

Revision ID: 0009
Revises: 0008
Create Date: 2026-11-22 03:00:00

Reserved slot: filled in by the work on its issue. Empty until then, so the chain stays linear.
"""
from typing import Sequence, Union

from alembic import op
import sqlalchemy as sa

revision: str = '0009'
down_revision: Union[str, None] = '0008'
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None


def upgrade() -> None:
    pass


def downgrade() -> None:
    pass
