"""link_keys.patient_id: the foreign key checked at commit (issue 13, registration check)

Revision ID: 0038
Revises: 0033
Create Date: 2026-12-03 09:40:00

The duplicate check at registration writes the new record's blocking keys in the same statement
as its lookup (registry/linkage/lookup.py), before the patient row exists in that transaction;
the key rows' reference to the patient is checked when the registration commits (a refused
registration rolls back, keys included). Nothing else changes: the constraint still holds at
every commit.
"""
from typing import Sequence, Union

from alembic import op


revision: str = '0038'
down_revision: Union[str, None] = '0034'
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None

FK = 'fk_link_keys_patient_id_patients'


def _set(deferred: bool) -> None:
    if op.get_bind().dialect.name == 'postgresql':
        op.execute(f"ALTER TABLE link_keys ALTER CONSTRAINT {FK} "
                   + ("DEFERRABLE INITIALLY DEFERRED" if deferred else "NOT DEFERRABLE"))
        return
    with op.batch_alter_table('link_keys', schema=None, recreate='always') as batch_op:
        batch_op.drop_constraint(FK, type_='foreignkey')
        batch_op.create_foreign_key(FK, 'patients', ['patient_id'], ['id'],
                                    **({'deferrable': True, 'initially': 'DEFERRED'} if deferred else {}))


def upgrade() -> None:
    _set(True)


def downgrade() -> None:
    _set(False)
