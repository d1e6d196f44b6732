"""Audit event MACs and quarantined leaves; idempotency claims owned by a database backend (issue 18)

Revision ID: 0019
Revises: 0018
Create Date: 2026-12-02 22:00:00

`audit_events.mac`: the HMAC the registry writes with each event (security/audit/event_mac.py).
`audit_log_leaves.quarantine`: why the sealer did not vouch for an event it sealed (None: vouched
for). Both nullable: events written before this revision have no MAC; the sealer quarantines any
that are still unsealed when it first runs after the upgrade (see the README's threat model).
`idempotency_keys.owner_pid`/`owner_started`: the PostgreSQL backend holding a pending claim, so
that a claim whose owner died is released at once (NULL on SQLite: the lock timeout decides).
"""
from typing import Sequence, Union

from alembic import op
import sqlalchemy as sa

revision: str = '0019'
down_revision: Union[str, None] = '0018'
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None


def upgrade() -> None:
    op.add_column('audit_events', sa.Column('mac', sa.LargeBinary(), nullable=True))
    op.add_column('audit_log_leaves', sa.Column('quarantine', sa.String(length=16), nullable=True))
    op.add_column('idempotency_keys', sa.Column('owner_pid', sa.Integer(), nullable=True))
    op.add_column('idempotency_keys', sa.Column('owner_started', sa.DateTime(timezone=True), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('idempotency_keys') as batch:
        batch.drop_column('owner_started')
        batch.drop_column('owner_pid')
    with op.batch_alter_table('audit_log_leaves') as batch:
        batch.drop_column('quarantine')
    with op.batch_alter_table('audit_events') as batch:
        batch.drop_column('mac')
