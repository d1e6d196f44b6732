"""Witness cosignatures of audit checkpoints and hand-overs of the checkpoint-signing key (issue 16)

Revision ID: 0029
Revises: 0028
Create Date: 2026-12-03 07:00:00

`audit_cosignatures`: C2SP cosignatures by configured witnesses, one per checkpoint and witness
key. `audit_key_handovers`: signed statements by the old checkpoint key naming the new one. Both
are append-only like the other audit tables (triggers refuse UPDATE and DELETE, and TRUNCATE on
PostgreSQL; the function nhr_audit_append_only comes from migration 0002).
"""
from typing import Sequence, Union

from alembic import op
import sqlalchemy as sa


revision: str = '0029'
down_revision: Union[str, None] = '0028'
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None

TABLES = ('audit_cosignatures', 'audit_key_handovers')


def upgrade() -> None:
    op.create_table('audit_cosignatures',
        sa.Column('id', sa.Integer(), autoincrement=True, nullable=False),
        sa.Column('tree_size', sa.BigInteger(), nullable=False),
        sa.Column('witness_name', sa.String(length=200), nullable=False),
        sa.Column('key_id', sa.String(length=8), nullable=False),
        sa.Column('signature', sa.LargeBinary(), nullable=False),
        sa.Column('received_at', sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(['tree_size'], ['audit_checkpoints.tree_size'],
                                name=op.f('fk_audit_cosignatures_tree_size_audit_checkpoints')),
        sa.PrimaryKeyConstraint('id', name=op.f('pk_audit_cosignatures')),
        sa.UniqueConstraint('tree_size', 'witness_name', 'key_id',
                            name=op.f('uq_audit_cosignatures_tree_size_witness_name_key_id')))
    op.create_index(op.f('ix_audit_cosignatures_tree_size'), 'audit_cosignatures', ['tree_size'])
    op.create_table('audit_key_handovers',
        sa.Column('sequence', sa.Integer(), autoincrement=False, nullable=False),
        sa.Column('tree_size', sa.BigInteger(), nullable=False),
        sa.Column('old_key_id', sa.String(length=8), nullable=False),
        sa.Column('new_key_id', sa.String(length=8), nullable=False),
        sa.Column('statement', sa.Text(), nullable=False),
        sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint('sequence', name=op.f('pk_audit_key_handovers')))
    dialect = op.get_bind().dialect.name
    for table in TABLES:
        if dialect == 'postgresql':
            op.execute(f'CREATE TRIGGER nhr_{table}_append_only BEFORE UPDATE OR DELETE ON {table} '
                       f'FOR EACH ROW EXECUTE FUNCTION nhr_audit_append_only()')
            op.execute(f'CREATE TRIGGER nhr_{table}_no_truncate BEFORE TRUNCATE ON {table} '
                       f'FOR EACH STATEMENT EXECUTE FUNCTION nhr_audit_append_only()')
        else:
            for event in ('UPDATE', 'DELETE'):
                op.execute(f"CREATE TRIGGER nhr_{table}_no_{event.lower()} BEFORE {event} ON {table} "
                           f"BEGIN SELECT RAISE(ABORT, 'audit table {table} is append-only: {event} refused'); END")


def downgrade() -> None:
    dialect = op.get_bind().dialect.name
    for table in TABLES:
        if dialect == 'postgresql':
            op.execute(f'DROP TRIGGER IF EXISTS nhr_{table}_append_only ON {table}')
            op.execute(f'DROP TRIGGER IF EXISTS nhr_{table}_no_truncate ON {table}')
        else:
            for event in ('update', 'delete'):
                op.execute(f'DROP TRIGGER IF EXISTS nhr_{table}_no_{event}')
    op.drop_table('audit_key_handovers')
    op.drop_index(op.f('ix_audit_cosignatures_tree_size'), table_name='audit_cosignatures')
    op.drop_table('audit_cosignatures')
