"""Move every encrypted value of one province to its newest field-key version, online.

Invariants:
- Batches in primary-key order, each its own short transaction: concurrent reads never wait for
  more than one batch's row locks, and a crash loses at most one uncommitted batch.
- A row is selected only while one of its values carries an older version than the target (the
  version is bytes 2-5 of the ciphertext, compared in SQL without decrypting), so a restart
  continues where the last run stopped: rows already moved are neither decrypted nor rewritten.
- Compare-and-swap: each UPDATE requires every rewritten column to still hold the ciphertext that
  was read (and the row version to be unchanged, where the table has one). A concurrent writer
  therefore always wins; its row, written under the active key, needs no move, or is taken by the
  next pass. Re-encryption does not bump the row version or `updated_at`: the content is the same,
  so a client's If-Match stays valid and the sync feed does not re-send the row.
- The plaintext exists only in this process's memory between decrypt and encrypt; nothing about a
  value (only counts) is logged or returned.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from dataclasses import dataclass, field

from sqlalchemy import Table, and_, bindparam, func, or_, select, update

from registry.keys.encrypted_columns import ENCRYPTED_TABLES, EncryptedTable
from registry.runtime import Runtime
from security.orm import Base

DEFAULT_BATCH = 500
MAX_PASSES = 10  # passes over the rows a concurrent writer kept from moving


def version_bytes(version: int) -> bytes:
    return struct.pack(">I", version)


def _table(spec: EncryptedTable) -> Table:
    return Base.metadata.tables[spec.table]


def pending_condition(spec: EncryptedTable, target: int):
    """SQL: some value of the row is under an older key version than `target` (the big-endian
    version bytes compare like the numbers, in PostgreSQL's bytea and SQLite's blob order alike)."""
    t = _table(spec)
    want = version_bytes(target)
    return or_(*[and_(t.c[c].is_not(None), func.substr(t.c[c], 2, 4) < want) for c in spec.columns])


def pending_rows(rt: Runtime, custodian: str, target: int) -> int:
    """Rows of `custodian` with some value under an older version than `target`."""
    total = 0
    with rt.engine.connect() as conn:
        for spec in ENCRYPTED_TABLES:
            t = _table(spec)
            total += conn.execute(select(func.count()).select_from(t).where(
                t.c[spec.custodian] == custodian, pending_condition(spec, target))).scalar_one()
    return total


@dataclass
class Outcome:
    target: int
    moved: int = 0            # rows rewritten
    values: int = 0           # ciphertexts re-encrypted (including any of a row a concurrent writer then kept)
    conflicts: int = 0        # rows a concurrent writer changed first (retried in the next pass)
    batches: int = 0
    remaining: int = 0        # rows still pending when the job ended (0 unless stopped)
    per_table: dict[str, int] = field(default_factory=dict)


def _batch(rt: Runtime, spec: EncryptedTable, custodian: str, target: int, after, size: int, out: Outcome):
    """Move one batch of `spec` rows after primary key `after`; returns the last key seen, or None when done.
    One SELECT and one executemany UPDATE (a pipeline on PostgreSQL), each row guarded by its own
    compare-and-swap: every encrypted column still as read (unchanged ones are written back as they
    were), and the row version where the table has one."""
    t = _table(spec)
    pk = t.c[spec.key]
    cols = [t.c[c] for c in spec.columns]
    extra = [t.c[spec.row_version]] if spec.row_version else []
    want = version_bytes(target)
    with rt.engine.begin() as conn:
        q = select(pk, *extra, *cols).where(t.c[spec.custodian] == custodian, pending_condition(spec, target))
        if after is not None:
            q = q.where(pk > after)
        rows = conn.execute(q.order_by(pk).limit(size)).all()
        params, changed = [], 0
        for r in rows:
            m = r._mapping
            row_id = m[spec.key]
            p = {"k_": row_id}
            moved = 0
            for c in spec.columns:
                blob = p[f"o_{c}"] = p[f"n_{c}"] = m[c]
                if blob is not None and blob[1:5] < want:
                    plain = rt.cipher.decrypt(blob, table=spec.table, column=c, row_id=row_id, custodian=custodian)
                    p[f"n_{c}"] = rt.cipher.encrypt(plain, table=spec.table, column=c, row_id=row_id, custodian=custodian)
                    moved += 1
            if spec.row_version:
                p["v_"] = m[spec.row_version]
            if moved:
                params.append(p)
                changed += moved
        if params:
            guard = [pk == bindparam("k_"), *[t.c[c].is_not_distinct_from(bindparam(f"o_{c}")) for c in spec.columns]]
            if spec.row_version:
                guard.append(t.c[spec.row_version] == bindparam("v_"))
            stmt = update(t).where(*guard).values({c: bindparam(f"n_{c}") for c in spec.columns})
            done = conn.execute(stmt, params).rowcount
            out.moved += done
            out.conflicts += len(params) - done
            out.values += changed
            out.per_table[spec.table] = out.per_table.get(spec.table, 0) + done
    out.batches += 1
    return rows[-1][0] if rows else None


def reencrypt(rt: Runtime, custodian: str, *, batch_size: int = DEFAULT_BATCH,
              progress: Callable[[int], None] | None = None, stop_after_batches: int | None = None,
              should_stop: Callable[[], bool] | None = None) -> Outcome:
    """Re-encrypt every value of `custodian` under its active field key. `progress(n)` is called
    with the rows handled by each batch. `stop_after_batches`, or `should_stop()` turning true
    between batches, ends the job early (as an interrupted run would); calling again continues."""
    rt.load_keys()
    target = rt.keys.active(custodian, "field").version
    out = Outcome(target)
    for _ in range(MAX_PASSES):
        before = out.moved + out.conflicts
        for spec in ENCRYPTED_TABLES:
            after = None
            while True:
                if (stop_after_batches is not None and out.batches >= stop_after_batches) or (should_stop and should_stop()):
                    out.remaining = pending_rows(rt, custodian, target)
                    return out
                handled = out.moved + out.conflicts
                after = _batch(rt, spec, custodian, target, after, batch_size, out)
                if progress is not None:
                    progress(out.moved + out.conflicts - handled)
                if after is None:
                    break
        if out.moved + out.conflicts == before or pending_rows(rt, custodian, target) == 0:
            break
    out.remaining = pending_rows(rt, custodian, target)
    return out
