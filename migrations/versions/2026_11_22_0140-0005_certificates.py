"""Vaccination certificates: issued certificates and revocations (issue 6)

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-22 01:40:00

A reserved slot in the chain so that parallel work does not fork the history; it is a no-op
until its feature fills it in.
"""
from typing import Sequence, Union

from alembic import op  # noqa: F401
import sqlalchemy as sa  # noqa: F401

revision: str = '0005'
down_revision: Union[str, None] = '0004'
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None


def upgrade() -> None:
    pass


def downgrade() -> None:
    pass
