"""Auditor workbench: break-glass review findings (issue 3)

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-22 01:40:00

`break_glass_reviews` holds one final finding per emergency access (the event id is the primary
key). Like the audit tables it is append-only: triggers refuse UPDATE and DELETE (and TRUNCATE
on PostgreSQL, reusing 0002's `nhr_audit_append_only()` function). In production also revoke
UPDATE, DELETE, TRUNCATE on it from the application role, as for the audit tables (see 0002).
"""
from typing import Sequence, Union

from alembic import op
import sqlalchemy as sa

revision: str = '0003'
down_revision: Union[str, None] = '0002'
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None

TABLE = 'break_glass_reviews'


def upgrade() -> None:
    op.create_table(TABLE,
    sa.Column('event_id', sa.Uuid(), nullable=False),
    sa.Column('finding', sa.String(length=16), nullable=False),
    sa.Column('note_ct', sa.LargeBinary(), nullable=True),
    sa.Column('note_custodian', sa.String(length=32), nullable=True),
    sa.Column('reviewer_user_id', sa.Uuid(), nullable=False),
    sa.Column('reviewed_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['event_id'], ['audit_events.id'], name=op.f('fk_break_glass_reviews_event_id_audit_events')),
    sa.PrimaryKeyConstraint('event_id', name=op.f('pk_break_glass_reviews'))
    )
    op.create_index(op.f('ix_break_glass_reviews_reviewed_at'), TABLE, ['reviewed_at'], unique=False)
    dialect = op.get_bind().dialect.name
    if dialect == 'postgresql':
        op.execute(f'CREATE TRIGGER nhr_{TABLE}_append_only BEFORE UPDATE OR DELETE ON {TABLE} '
                   f'FOR EACH ROW EXECUTE FUNCTION nhr_audit_append_only()')
        op.execute(f'CREATE TRIGGER nhr_{TABLE}_no_truncate BEFORE TRUNCATE ON {TABLE} '
                   f'FOR EACH STATEMENT EXECUTE FUNCTION nhr_audit_append_only()')
    elif dialect == 'sqlite':
        for event in ('UPDATE', 'DELETE'):
            op.execute(f"CREATE TRIGGER nhr_{TABLE}_no_{event.lower()} BEFORE {event} ON {TABLE} "
                       f"BEGIN SELECT RAISE(ABORT, 'audit table {TABLE} is append-only: {event} refused'); END")
    else:  # pragma: no cover
        raise NotImplementedError(f'no append-only triggers for {dialect}')


def downgrade() -> None:
    dialect = op.get_bind().dialect.name
    if dialect == 'postgresql':
        op.execute(f'DROP TRIGGER IF EXISTS nhr_{TABLE}_append_only ON {TABLE}')
        op.execute(f'DROP TRIGGER IF EXISTS nhr_{TABLE}_no_truncate ON {TABLE}')
    elif dialect == 'sqlite':
        for event in ('update', 'delete'):
            op.execute(f'DROP TRIGGER IF EXISTS nhr_{TABLE}_no_{event}')
    op.drop_index(op.f('ix_break_glass_reviews_reviewed_at'), table_name=TABLE)
    op.drop_table(TABLE)
