"""Key rotation that finishes (issue 16): KEK generation and backend per data key, retirement

Revision ID: 0028
Revises: 0026
Create Date: 2026-12-03 07:00:00

- `data_keys.kek_version` / `kek_backend`: which KEK generation, in which backend (`file` or
  `pkcs11`), wrapped the key; every existing key was wrapped by generation 1 in the key directory.
- `data_keys.retired_at`: set by `nhr keys retire` once no row uses the version; a retired
  version is refused for decryption.
- `break_glass_reviews` stays append-only except for one change: re-encryption of `note_ct`
  to a newer field-key version (every other column unchanged, the new ciphertext's key version,
  bytes 2-5 of the big-endian header, greater than the old one). Without it a province's old key
  could never be retired while a break-glass finding carries a note.
"""
from typing import Sequence, Union

from alembic import op
import sqlalchemy as sa

revision: str = '0028'
down_revision: Union[str, None] = '0026'
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None

TABLE = 'break_glass_reviews'
_SAME = ('event_id', 'finding', 'note_custodian', 'reviewer_user_id', 'reviewed_at')

_PG_FUNCTION = f"""
CREATE OR REPLACE FUNCTION nhr_break_glass_reencrypt_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'UPDATE'
       AND {' AND '.join(f'NEW.{c} IS NOT DISTINCT FROM OLD.{c}' for c in _SAME)}
       AND OLD.note_ct IS NOT NULL AND NEW.note_ct IS NOT NULL
       AND substr(NEW.note_ct, 2, 4) > substr(OLD.note_ct, 2, 4) THEN
        RETURN NEW;
    END IF;
    RAISE EXCEPTION 'audit table % is append-only: % refused', TG_TABLE_NAME, TG_OP
        USING ERRCODE = 'insufficient_privilege';
END
$$
"""

_SQLITE_GUARD = (f"CREATE TRIGGER nhr_{TABLE}_no_update BEFORE UPDATE ON {TABLE} "
                 f"WHEN NOT ({' AND '.join(f'NEW.{c} IS OLD.{c}' for c in _SAME)} "
                 f"AND OLD.note_ct IS NOT NULL AND NEW.note_ct IS NOT NULL AND substr(NEW.note_ct, 2, 4) > substr(OLD.note_ct, 2, 4)) "
                 f"BEGIN SELECT RAISE(ABORT, 'audit table {TABLE} is append-only: UPDATE refused'); END")


def upgrade() -> None:
    with op.batch_alter_table('data_keys') as batch:
        batch.add_column(sa.Column('kek_version', sa.Integer(), server_default=sa.text('1'), nullable=False))
        batch.add_column(sa.Column('kek_backend', sa.String(length=8), server_default='file', nullable=False))
        batch.add_column(sa.Column('retired_at', sa.DateTime(timezone=True), nullable=True))
    dialect = op.get_bind().dialect.name
    if dialect == 'postgresql':
        op.execute(_PG_FUNCTION)
        op.execute(f'DROP TRIGGER IF EXISTS nhr_{TABLE}_append_only ON {TABLE}')
        op.execute(f'CREATE TRIGGER nhr_{TABLE}_append_only BEFORE UPDATE OR DELETE ON {TABLE} '
                   f'FOR EACH ROW EXECUTE FUNCTION nhr_break_glass_reencrypt_only()')
    elif dialect == 'sqlite':
        op.execute(f'DROP TRIGGER IF EXISTS nhr_{TABLE}_no_update')
        op.execute(_SQLITE_GUARD)


def downgrade() -> None:
    dialect = op.get_bind().dialect.name
    if dialect == 'postgresql':
        op.execute(f'DROP TRIGGER IF EXISTS nhr_{TABLE}_append_only ON {TABLE}')
        op.execute(f'CREATE TRIGGER nhr_{TABLE}_append_only BEFORE UPDATE OR DELETE ON {TABLE} '
                   f'FOR EACH ROW EXECUTE FUNCTION nhr_audit_append_only()')
        op.execute('DROP FUNCTION IF EXISTS nhr_break_glass_reencrypt_only()')
    elif dialect == 'sqlite':
        op.execute(f'DROP TRIGGER IF EXISTS nhr_{TABLE}_no_update')
        op.execute(f"CREATE TRIGGER nhr_{TABLE}_no_update BEFORE UPDATE ON {TABLE} "
                   f"BEGIN SELECT RAISE(ABORT, 'audit table {TABLE} is append-only: UPDATE refused'); END")
    with op.batch_alter_table('data_keys') as batch:
        batch.drop_column('retired_at')
        batch.drop_column('kek_backend')
        batch.drop_column('kek_version')
