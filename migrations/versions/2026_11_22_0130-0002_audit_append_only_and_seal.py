"""audit log append-only, Merkle leaves and signed checkpoints

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-23 09:00:00.000000

Triggers refuse UPDATE and DELETE (and TRUNCATE on PostgreSQL) on the four audit tables, for
every role including the owner. A superuser can still drop the triggers, which is why the log
is also sealed in a signed Merkle tree: tampering that bypasses the triggers is detected by
`nhr audit verify`.

Production: the application should also connect as a role without UPDATE/DELETE grants on
these tables, so that even dropping a trigger needs another role (the owner). With the schema
owned by `nhr_owner` and the API connecting as `nhr_app`:

    REVOKE UPDATE, DELETE, TRUNCATE ON audit_events, audit_event_subjects,
        audit_log_leaves, audit_checkpoints FROM nhr_app;
    GRANT SELECT, INSERT ON audit_events, audit_event_subjects,
        audit_log_leaves, audit_checkpoints TO nhr_app;

(The tests connect as a superuser, so they rely on the triggers alone.)
"""
from typing import Sequence, Union

from alembic import op
import sqlalchemy as sa


revision: str = '0002'
down_revision: Union[str, None] = '0001'
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None

APPEND_ONLY = ('audit_events', 'audit_event_subjects', 'audit_log_leaves', 'audit_checkpoints')

_PG_FUNCTION = """
CREATE OR REPLACE FUNCTION nhr_audit_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'audit table % is append-only: % refused', TG_TABLE_NAME, TG_OP
        USING ERRCODE = 'insufficient_privilege';
END
$$
"""


def _create_triggers() -> None:
    dialect = op.get_bind().dialect.name
    if dialect == 'postgresql':
        op.execute(_PG_FUNCTION)
        for table in APPEND_ONLY:
            op.execute(f'CREATE TRIGGER nhr_{table}_append_only BEFORE UPDATE OR DELETE ON {table} '
                       f'FOR EACH ROW EXECUTE FUNCTION nhr_audit_append_only()')
            op.execute(f'CREATE TRIGGER nhr_{table}_no_truncate BEFORE TRUNCATE ON {table} '
                       f'FOR EACH STATEMENT EXECUTE FUNCTION nhr_audit_append_only()')
    elif dialect == 'sqlite':
        for table in APPEND_ONLY:
            for event in ('UPDATE', 'DELETE'):
                op.execute(f"CREATE TRIGGER nhr_{table}_no_{event.lower()} BEFORE {event} ON {table} "
                           f"BEGIN SELECT RAISE(ABORT, 'audit table {table} is append-only: {event} refused'); END")
    else:  # pragma: no cover
        raise NotImplementedError(f'no append-only triggers for {dialect}')


def _drop_triggers() -> None:
    dialect = op.get_bind().dialect.name
    if dialect == 'postgresql':
        for table in APPEND_ONLY:
            op.execute(f'DROP TRIGGER IF EXISTS nhr_{table}_append_only ON {table}')
            op.execute(f'DROP TRIGGER IF EXISTS nhr_{table}_no_truncate ON {table}')
        op.execute('DROP FUNCTION IF EXISTS nhr_audit_append_only()')
    elif dialect == 'sqlite':
        for table in APPEND_ONLY:
            for event in ('update', 'delete'):
                op.execute(f'DROP TRIGGER IF EXISTS nhr_{table}_no_{event}')


def upgrade() -> None:
    op.create_table('audit_checkpoints',
    sa.Column('tree_size', sa.BigInteger(), autoincrement=False, nullable=False),
    sa.Column('root_hash', sa.LargeBinary(), nullable=False),
    sa.Column('signed_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('key_id', sa.String(length=64), nullable=False),
    sa.Column('signature', sa.LargeBinary(), nullable=False),
    sa.Column('compact_range', sa.LargeBinary(), nullable=False),
    sa.PrimaryKeyConstraint('tree_size', name=op.f('pk_audit_checkpoints'))
    )
    op.create_table('audit_log_leaves',
    sa.Column('position', sa.BigInteger(), autoincrement=False, nullable=False),
    sa.Column('event_id', sa.Uuid(), nullable=False),
    sa.Column('leaf_hash', sa.LargeBinary(), nullable=False),
    sa.ForeignKeyConstraint(['event_id'], ['audit_events.id'], name=op.f('fk_audit_log_leaves_event_id_audit_events')),
    sa.PrimaryKeyConstraint('position', name=op.f('pk_audit_log_leaves')),
    sa.UniqueConstraint('event_id', name=op.f('uq_audit_log_leaves_event_id'))
    )
    _create_triggers()


def downgrade() -> None:
    _drop_triggers()
    op.drop_table('audit_log_leaves')
    op.drop_table('audit_checkpoints')
