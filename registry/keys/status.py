"""How many encrypted values and rows each field-key version of each province still protects,
and retirement: a version is retired only when nothing uses it.

Counting reads the version from the ciphertext header in SQL (bytes 2-5, security/crypto/fields.py);
nothing is decrypted.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import func, or_, select

from registry.errors import Conflict
from registry.keys.encrypted_columns import ENCRYPTED_TABLES
from registry.keys.reencrypt import _table, version_bytes
from registry.runtime import Runtime
from security.crypto.data_keys import DataKeyRow, DataKeyStore


@dataclass(frozen=True, slots=True)
class VersionUse:
    custodian: str
    version: int
    state: str          # active | old | retired | missing (values under a version with no key row)
    kek: str            # e.g. "pkcs11 v2"
    values: int
    rows: int


def _values(conn) -> dict[tuple[str, int], int]:
    out: dict[tuple[str, int], int] = {}
    for spec in ENCRYPTED_TABLES:
        t = _table(spec)
        for c in spec.columns:
            v = func.substr(t.c[c], 2, 4)
            for custodian, raw, n in conn.execute(select(t.c[spec.custodian], v, func.count()).where(t.c[c].is_not(None))
                                                  .group_by(t.c[spec.custodian], v)):
                key = (custodian, int.from_bytes(bytes(raw), "big"))
                out[key] = out.get(key, 0) + n
    return out


def rows_using(conn, custodian: str, version: int) -> int:
    """Rows of `custodian` with at least one value under `version`."""
    want = version_bytes(version)
    total = 0
    for spec in ENCRYPTED_TABLES:
        t = _table(spec)
        total += conn.execute(select(func.count()).select_from(t).where(
            t.c[spec.custodian] == custodian, or_(*[func.substr(t.c[c], 2, 4) == want for c in spec.columns]))).scalar_one()
    return total


def status(rt: Runtime) -> list[VersionUse]:
    """One line per (province, field-key version) that has a key row or protects a value."""
    with rt.engine.connect() as conn:
        keys = {(r.custodian, r.version): r for r in conn.execute(
            select(DataKeyRow.__table__).where(DataKeyRow.purpose == "field"))}
        values = _values(conn)
        out = []
        for custodian, version in sorted(set(keys) | set(values)):
            k = keys.get((custodian, version))
            state = "missing" if k is None else "retired" if k.retired_at else "active" if k.active else "old"
            n = values.get((custodian, version), 0)
            out.append(VersionUse(custodian, version, state, f"{k.kek_backend} v{k.kek_version}" if k else "-", n,
                                  rows_using(conn, custodian, version) if n else 0))
    return out


SETTLE_SECONDS = 2 * DataKeyStore.MAX_AGE  # every running process writes under the newest version by then


def retire(rt: Runtime, custodian: str, version: int, *, delete: bool = False, settle_seconds: float = SETTLE_SECONDS) -> None:
    """Retire a field-key version nothing uses any more (Conflict while a row still does, or while
    the newest version is younger than `settle_seconds`, when a process that has not seen the
    rotation yet may still write under an older one); with `delete`, also delete its wrapped key
    (irreversible: only backups taken before still hold it)."""
    with rt.engine.begin() as conn:
        newest = conn.execute(select(func.max(DataKeyRow.created_at)).where(
            DataKeyRow.custodian == custodian, DataKeyRow.purpose == "field")).scalar_one()
        if newest is not None and (datetime.now(UTC) - newest).total_seconds() < settle_seconds:
            raise Conflict(f"the newest field key of {custodian} is less than {settle_seconds:.0f} s old; running "
                           "processes may not have seen it yet: retire later")
        if version == rt.keys.active(custodian, "field").version:
            raise Conflict(f"field key v{version} of {custodian} is the active version; rotate first")
        in_use = rows_using(conn, custodian, version)
        if in_use:
            raise Conflict(f"field key v{version} of {custodian} still protects {in_use} rows; run `nhr keys reencrypt` first")
        rt.keys.retire(conn, custodian, version)
        if delete:
            rt.keys.delete_retired(conn, custodian, version)
