"""Staff access tokens can be revoked (issue 16 item 5)

Revision ID: 0032
Revises: 0029
Create Date: 2026-12-03 07:00:00

`users.token_generation`: every access token carries the generation it was issued under (`tgen`);
logout, deactivation, a password reset and an administrator's "end all sessions" increment it, and
every request refuses a token of an older generation (registry/users/revocation.py). Existing
accounts start at 0; tokens issued before this migration carry no `tgen` and are refused, so
their holders log in again (tokens live at most an hour).
"""
from typing import Sequence, Union

from alembic import op
import sqlalchemy as sa

revision: str = '0032'
down_revision: Union[str, None] = '0029'
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None


def upgrade() -> None:
    with op.batch_alter_table('users') as batch:
        batch.add_column(sa.Column('token_generation', sa.Integer(), server_default='0', nullable=False))


def downgrade() -> None:
    with op.batch_alter_table('users') as batch:
        batch.drop_column('token_generation')
