"""A data steward's decision note, encrypted (issue 13 item 5, issue 14)

Revision ID: 0026
Revises: 0025
Create Date: 2026-12-03 07:00:00

`link_candidates.note_ct`: the steward's optional note on a decision (same child, not the same,
unsure), AES-256-GCM ciphertext bound to the table, column and candidate id under the keys of
`note_custodian` (the deciding steward's province). No plaintext column; existing rows get none.
"""
from typing import Sequence, Union

from alembic import op
import sqlalchemy as sa

revision: str = '0026'
down_revision: Union[str, None] = '0025'
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None


def upgrade() -> None:
    with op.batch_alter_table('link_candidates') as batch:
        batch.add_column(sa.Column('note_ct', sa.LargeBinary(), nullable=True))
        batch.add_column(sa.Column('note_custodian', sa.String(length=32), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('link_candidates') as batch:
        batch.drop_column('note_custodian')
        batch.drop_column('note_ct')
