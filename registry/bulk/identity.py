"""Identifier checks for a whole chunk at once: one blind-index query per identifier system,
candidates confirmed by decrypting them (as the single-record service does, never trusting a
26-bit index value alone)."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from registry import identifiers
from registry.patients import codec
from registry.patients.models import Patient, PatientIdentifierIndex

P = Patient.__table__
IX = PatientIdentifierIndex.__table__


def taken(session: Session, rt, system: str, values: set[str], columns: tuple[str, ...]) -> set[str]:
    """The normalised `values` of `system` that a patient already holds in one of `columns`."""
    if not values:
        return set()
    wanted: dict[tuple[str, int], set[str]] = {}
    for v in values:
        for custodian, bidx in rt.indexer.for_all_custodians(system, v).items():
            wanted.setdefault((custodian, bidx), set()).add(v)
    bidxs = sorted({b for _, b in wanted})
    found: set[str] = set()
    for i in range(0, len(bidxs), 5000):
        q = (select(P.c.id, P.c.custodian, *[P.c[f"{c}_ct"] for c in columns], IX.c.column.label("matched"),
                    IX.c.custodian.label("ix_custodian"), IX.c.bidx)
             .join(IX, IX.c.patient_id == P.c.id)
             .where(IX.c.system == system, IX.c.column.in_(columns), IX.c.bidx.in_(bidxs[i:i + 5000])))
        for r in session.execute(q):
            expected = wanted.get((r.ix_custodian, r.bidx))
            if not expected:
                continue
            value = codec.decrypt_column(rt.cipher, r, r.matched)
            if value is not None and identifiers.normalise(system, value) in expected:
                found.add(identifiers.normalise(system, value))
    return found


def new_health_ids(session: Session, rt, n: int) -> list[str]:
    """`n` fresh health IDs, none held by a patient (confirmed as above)."""
    ids: list[str] = []
    while len(ids) < n:
        batch = {identifiers.new_health_id() for _ in range(n - len(ids))}
        norm = {identifiers.normalise(identifiers.HEALTH_ID_SYSTEM, h): h for h in batch}
        clash = taken(session, rt, identifiers.HEALTH_ID_SYSTEM, set(norm), ("health_id",))
        ids += [h for k, h in norm.items() if k not in clash and h not in ids]
    return ids[:n]
