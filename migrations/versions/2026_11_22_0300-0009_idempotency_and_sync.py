"""Idempotency keys and offline sync (issue 5)

Revision ID: 0009
Revises: 0008
Create Date: 2026-11-22 03:00:00

`idempotency_keys` (claims and stored, encrypted responses of POSTs with an Idempotency-Key),
`sync_receipts` (what each batch item did, for duplicate detection on resend), and
`immunizations.updated_at`, the change position of the sync feed (NULL for doses recorded before it: the feed reads coalesce(updated_at, recorded_at)).
"""
from typing import Sequence, Union

from alembic import op
import sqlalchemy as sa

revision: str = '0009'
down_revision: Union[str, None] = '0008'
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None


def upgrade() -> None:
    op.create_table('idempotency_keys',
    sa.Column('key_hash', sa.LargeBinary(length=32), nullable=False),
    sa.Column('fingerprint', sa.LargeBinary(length=32), nullable=False),
    sa.Column('state', sa.String(length=8), nullable=False),
    sa.Column('claim_token', sa.LargeBinary(length=16), nullable=False),
    sa.Column('locked_until', sa.DateTime(timezone=True), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('expires_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('status_code', sa.Integer(), nullable=True),
    sa.Column('response_ct', sa.LargeBinary(), nullable=True),
    sa.PrimaryKeyConstraint('key_hash', name=op.f('pk_idempotency_keys'))
    )
    with op.batch_alter_table('idempotency_keys', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_idempotency_keys_expires_at'), ['expires_at'], unique=False)
    op.create_table('sync_receipts',
    sa.Column('kind', sa.String(length=16), nullable=False),
    sa.Column('record_id', sa.Uuid(), nullable=False),
    sa.Column('content_mac', sa.LargeBinary(length=32), nullable=False),
    sa.Column('result_id', sa.Uuid(), nullable=True),
    sa.Column('user_id', sa.Uuid(), nullable=False),
    sa.Column('received_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('kind', 'record_id', name=op.f('pk_sync_receipts'))
    )
    op.add_column('immunizations', sa.Column('updated_at', sa.DateTime(timezone=True), nullable=True))
    # No backfill: the feed reads coalesce(updated_at, recorded_at), so existing doses keep their
    # position, and a deployment with millions of doses is not held up by rewriting every row.


def downgrade() -> None:
    with op.batch_alter_table('immunizations', schema=None) as batch_op:
        batch_op.drop_column('updated_at')
    op.drop_table('sync_receipts')
    with op.batch_alter_table('idempotency_keys', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_idempotency_keys_expires_at'))
    op.drop_table('idempotency_keys')
