"""Loading a synthetic province into PostgreSQL as registration leaves it, fast: COPY.

Each record of registry/demo/linkage_population.py becomes a `patients` row with its fields
encrypted under the custodian's field key (registry/patients/codec.py), its identifiers' blind
index rows and its linkage blocking keys (registry/linkage/records.key_rows), as
`registry/patients/service.register` writes them, but by COPY in `workers` forked processes
(encryption and hashing are the cost: CPU, so both cores). Each process commits its share in
one transaction per chunk, patients before the rows that refer to them.
"""

from __future__ import annotations

import multiprocessing
import uuid
from datetime import UTC, datetime

PATIENT_COLUMNS = ("id", "version", "custodian", "province", "district", "home_facility", "sex", "birth_date",
                   "guardian_relationship", "created_at", "updated_at", "created_by", "unnamed")
CHUNK = 20_000

_JOB: tuple = ()  # (rt, url, records, province) inherited by the forked loaders


def _rows(rt, province: str, recs: list[dict], now: datetime):
    from registry.identifiers import new_health_id
    from registry.linkage import records
    from registry.patients import codec

    p_rows, i_rows, k_rows = [], [], []
    creator = uuid.uuid4()
    for r in recs:
        pid = uuid.UUID(r["unique_id"])
        plain = {"given_name": r["given_name"], "family_name": r["family_name"], "guardian_name": r["guardian_name"],
                 "guardian_cnic": r["guardian_cnic"], "phone": r["phone"], "address": None, "health_id": new_health_id(),
                 "bform": r.get("bform"), "cnic": None}
        ct = codec.encrypt_fields(rt.cipher, province, pid, {c: plain.get(c) for c in codec.ENCRYPTED})
        p_rows.append((pid, 1, province, r["province"], r["district"], r["facility"], r["sex"], r["birth_date"],
                       "mother", now, now, creator, False, *(ct[f"{c}_ct"] for c in codec.ENCRYPTED)))
        i_rows += [(x["patient_id"], x["column"], x["system"], x["custodian"], x["bidx"])
                   for x in codec.index_rows(rt.indexer, province, pid, plain)]
        rec = records.from_input(given_name=r["given_name"], family_name=r["family_name"], guardian_name=r["guardian_name"],
                                 guardian_cnic=r["guardian_cnic"], bform=r.get("bform"), phone=r["phone"],
                                 birth_date=r["birth_date"], sex=r["sex"], facility=r["facility"],
                                 district=r["district"], province=r["province"])
        k_rows += [(x["patient_id"], x["kind"], x["custodian"], x["bidx"])
                   for x in records.key_rows(rt.indexer, province, pid, rec)]
    return p_rows, i_rows, k_rows


def _copy_part(part: tuple[int, int]) -> int:
    import psycopg

    from registry.patients import codec

    rt, url, recs, province = _JOB
    now = datetime.now(UTC)
    cols = ", ".join(PATIENT_COLUMNS + tuple(f"{c}_ct" for c in codec.ENCRYPTED))
    with psycopg.connect(url, autocommit=True) as conn:  # autocommit: each chunk's transaction is a real one
        conn.execute("SET synchronous_commit = off")
        for lo in range(part[0], part[1], CHUNK):
            p_rows, i_rows, k_rows = _rows(rt, province, recs[lo:min(lo + CHUNK, part[1])], now)
            with conn.transaction(), conn.cursor() as cur:
                for sql, rows in ((f"COPY patients ({cols}) FROM STDIN", p_rows),
                                  ("COPY patient_identifier_index (patient_id, \"column\", system, custodian, bidx) "
                                   "FROM STDIN", i_rows),
                                  ("COPY link_keys (patient_id, kind, custodian, bidx) FROM STDIN", k_rows)):
                    with cur.copy(sql) as copy:
                        for row in rows:
                            copy.write_row(row)
    return part[1] - part[0]


def load(rt, url: str, recs: list[dict], province: str = "PK-PB", workers: int = 2) -> int:
    """COPY `recs` (linkage_population records) into the database at `url` (a libpq URL) as
    `province`'s patients; returns how many. `rt` holds the province's keys."""
    global _JOB
    url = url.replace("postgresql+psycopg://", "postgresql://")
    step = -(-len(recs) // max(1, workers))
    parts = [(lo, min(lo + step, len(recs))) for lo in range(0, len(recs), step)]
    _JOB = (rt, url, recs, province)
    try:
        if workers <= 1:
            n = sum(_copy_part(p) for p in parts)
        else:
            rt.engine.dispose()  # no pooled connection crosses the fork
            with multiprocessing.get_context("fork").Pool(workers) as pool:
                n = sum(pool.map(_copy_part, parts))
    finally:
        _JOB = ()
    import psycopg

    with psycopg.connect(url, autocommit=True) as conn:  # statistics after a bulk load, as autovacuum would gather them
        conn.execute("ANALYZE patients")
        conn.execute("ANALYZE patient_identifier_index")
        conn.execute("ANALYZE link_keys")
    return n
