"""Linkage queries of the matching side: candidate pairs, models, blocking keys, dedupe runs.

Patient rows are read with the acting principal's scope in the query (registry/scoping.py);
candidate and model rows hold ids, scores, levels and probabilities only.
"""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime

from sqlalchemy import delete, insert, or_, select, text, update
from sqlalchemy.engine import Row
from sqlalchemy.orm import Session

from registry.linkage.match_models import DedupeRun, LinkKey, LinkModel
from registry.linkage.models import LinkCandidate
from registry.patients.models import Patient
from security.access.principal import Principal

PATIENTS = Patient.__table__
CANDIDATES = LinkCandidate.__table__
KEYS = LinkKey.__table__
MODELS = LinkModel.__table__
RUNS = DedupeRun.__table__


def ordered(a: uuid.UUID, b: uuid.UUID) -> tuple[uuid.UUID, uuid.UUID]:
    """A pair's storage order: left < right by the UUIDs' string form (see models.py)."""
    return (a, b) if str(a) < str(b) else (b, a)


def propose(session: Session, a: uuid.UUID, b: uuid.UUID, *, weight: float, probability: float, grade: str,
            levels: dict[str, int], model_version: str, source: str, now: datetime | None = None) -> str:
    """Insert the pair as an open candidate, or refresh an open one; a pair already decided
    (merged, not_same, unsure) is left exactly as it is, never reopened.
    Returns "new", "updated", "unchanged" or "decided"."""
    left, right = ordered(a, b)
    row = session.execute(select(CANDIDATES.c.id, CANDIDATES.c.status, CANDIDATES.c.match_weight, CANDIDATES.c.levels,
                                 CANDIDATES.c.model_version)
                          .where(CANDIDATES.c.left_id == left, CANDIDATES.c.right_id == right)).first()
    values = {"match_weight": weight, "match_probability": probability, "grade": grade,
              "levels": {k: int(v) for k, v in levels.items()}, "model_version": model_version}
    if row is None:
        session.execute(insert(CANDIDATES), [{"id": uuid.uuid4(), "version": 1, "left_id": left, "right_id": right,
                                              "source": source, "status": "open", "created_at": now or datetime.now(UTC),
                                              **values}])
        return "new"
    if row.status != "open":
        return "decided"
    if abs(row.match_weight - weight) < 1e-9 and row.levels == values["levels"] and row.model_version == model_version:
        return "unchanged"
    session.execute(update(CANDIDATES).where(CANDIDATES.c.id == row.id, CANDIDATES.c.status == "open")
                    .values(**values, version=CANDIDATES.c.version + 1))
    return "updated"


def propose_many(session: Session, found: list[tuple[uuid.UUID, uuid.UUID, object]], *, model_version: str,
                 source: str, now: datetime | None = None) -> int:
    """`propose` for many pairs (a dedupe unit): one SELECT of the pairs already stored per 500,
    one INSERT of the new ones, an UPDATE only for an open pair whose score changed. `found`
    holds (a, b, Scored); returns how many pairs are new. Same outcome as `propose` pair by pair.
    On PostgreSQL the pairs and the new rows go as one JSON document a statement (per 5,000),
    which costs the dedupe's process far less than binding every row's parameters."""
    from sqlalchemy import tuple_

    wanted: dict[tuple[uuid.UUID, uuid.UUID], object] = {}
    for a, b, sc in found:
        wanted.setdefault(ordered(a, b), sc)
    keys, now = list(wanted), now or datetime.now(UTC)
    postgres = session.get_bind().dialect.name == "postgresql"
    stored = {}
    if postgres:  # a JSON document of the pairs, joined: no expanding IN of 1,000 parameters to compile
        for i in range(0, len(keys), _PG_CHUNK):
            doc = json.dumps([{"l": str(a), "r": str(b)} for a, b in keys[i:i + _PG_CHUNK]])
            stored.update({(r.left_id, r.right_id): r for r in session.execute(_STORED_PG, {"doc": doc})})
    else:
        for i in range(0, len(keys), 500):
            chunk = keys[i:i + 500]
            q = select(CANDIDATES.c.id, CANDIDATES.c.left_id, CANDIDATES.c.right_id, CANDIDATES.c.status,
                       CANDIDATES.c.match_weight, CANDIDATES.c.levels, CANDIDATES.c.model_version) \
                .where(tuple_(CANDIDATES.c.left_id, CANDIDATES.c.right_id).in_(chunk))
            stored.update({(r.left_id, r.right_id): r for r in session.execute(q)})
    new = []
    for key, sc in wanted.items():
        values = {"match_weight": sc.weight, "match_probability": sc.probability, "grade": sc.grade,
                  "levels": {k: int(v) for k, v in sc.levels.items()}, "model_version": model_version}
        row = stored.get(key)
        if row is None:
            new.append({"id": uuid.uuid4(), "version": 1, "left_id": key[0], "right_id": key[1], "source": source,
                        "status": "open", "created_at": now, **values})
        elif row.status == "open" and not (abs(row.match_weight - sc.weight) < 1e-9 and row.levels == values["levels"]
                                           and row.model_version == model_version):
            session.execute(update(CANDIDATES).where(CANDIDATES.c.id == row.id, CANDIDATES.c.status == "open")
                            .values(**values, version=CANDIDATES.c.version + 1))
    if new and postgres:  # one statement a chunk, the rows as one JSON document (the json module's C encoder)
        created = (now if now.tzinfo is not None else now.replace(tzinfo=UTC)).isoformat()
        for i in range(0, len(new), _PG_CHUNK):
            doc = json.dumps([{**r, "id": str(r["id"]), "left_id": str(r["left_id"]), "right_id": str(r["right_id"]),
                               "created_at": created} for r in new[i:i + _PG_CHUNK]])
            session.execute(_INSERT_PG, {"doc": doc})
    elif new:
        session.execute(insert(CANDIDATES), new)
    return len(new)


_PG_CHUNK = 5000
_STORED_PG = text(
    "SELECT c.id, c.left_id, c.right_id, c.status, c.match_weight, c.levels, c.model_version "
    "FROM link_candidates c JOIN json_to_recordset(CAST(:doc AS json)) AS p(l uuid, r uuid) "
    "ON c.left_id = p.l AND c.right_id = p.r")
_NEW_COLUMNS = ("id", "version", "left_id", "right_id", "source", "status", "created_at", "match_weight",
                "match_probability", "grade", "levels", "model_version")
_INSERT_PG = text(
    f"INSERT INTO link_candidates ({', '.join(_NEW_COLUMNS)}) SELECT {', '.join(_NEW_COLUMNS)} "
    "FROM json_populate_recordset(NULL::link_candidates, CAST(:doc AS json))")


def not_same_pairs(session: Session, ids: list[uuid.UUID]) -> set[tuple[uuid.UUID, uuid.UUID]]:
    """Pairs among/with `ids` a steward decided are not the same child (never proposed again)."""
    if not ids:
        return set()
    rows = session.execute(select(CANDIDATES.c.left_id, CANDIDATES.c.right_id).where(
        CANDIDATES.c.status == "not_same", or_(CANDIDATES.c.left_id.in_(ids), CANDIDATES.c.right_id.in_(ids))))
    return {(r.left_id, r.right_id) for r in rows}


# ---------------------------------------------------------------- models

def active_model(session: Session) -> Row | None:
    return session.execute(select(MODELS).where(MODELS.c.active.is_(True)).order_by(MODELS.c.created_at.desc())).first()


def model(session: Session, version: str) -> Row | None:
    return session.execute(select(MODELS).where(MODELS.c.version == version)).first()


def save_model(session: Session, *, version: str, method: str, parameters: dict, thresholds: dict, activate: bool,
               note: str | None = None) -> None:
    if activate:
        session.execute(update(MODELS).where(MODELS.c.active.is_(True)).values(active=False))
    session.execute(insert(MODELS), [{"version": version, "method": method, "parameters": parameters,
                                      "thresholds": thresholds, "active": activate, "created_at": datetime.now(UTC),
                                      "note": note}])


def list_models(session: Session) -> list[Row]:
    return list(session.execute(select(MODELS.c.version, MODELS.c.method, MODELS.c.active, MODELS.c.created_at,
                                       MODELS.c.note).order_by(MODELS.c.created_at)))


# ---------------------------------------------------------------- blocking keys

def replace_keys(session: Session, patient_id: uuid.UUID, rows: list[dict]) -> None:
    session.execute(delete(KEYS).where(KEYS.c.patient_id == patient_id))
    if rows:
        session.execute(insert(KEYS), rows)


def insert_keys(session: Session, rows: list[dict]) -> None:
    if rows:
        session.execute(insert(KEYS), rows)


def keyed(session: Session, patient_ids: list[uuid.UUID]) -> set[uuid.UUID]:
    out: set[uuid.UUID] = set()
    for i in range(0, len(patient_ids), 1000):
        out |= set(session.scalars(select(KEYS.c.patient_id).where(KEYS.c.patient_id.in_(patient_ids[i:i + 1000]))))
    return out


def by_keys(session: Session, principal: Principal, wanted: dict[str, list[tuple[str, int]]],
            exclude: uuid.UUID | None = None) -> list[Row]:
    """Patients in the principal's capture or search scope whose blocking key matches one of
    `wanted` (kind -> [(custodian, bidx)]). Candidates only: the caller decrypts and scores.
    One statement (registry/linkage/lookup.py, built once per pair of scopes): bidx IN (...) on
    the bidx index (one probe per value), joined to the patients in scope; the (kind,
    custodian, bidx) triple is checked here."""
    from registry.linkage import lookup

    return lookup.run(session, principal, wanted, exclude=exclude)


def province_rows(session: Session, province: str, *, after: uuid.UUID | None = None, limit: int = 5000) -> list[Row]:
    """One page of a custodian's patients (batch deduplication runs as the custodian's system
    actor, over the records it holds the keys of), in id order."""
    q = select(PATIENTS).where(PATIENTS.c.custodian == province).order_by(PATIENTS.c.id).limit(limit)
    if after is not None:
        q = q.where(PATIENTS.c.id > after)
    return list(session.execute(q))


def province_compared(session: Session, province: str, columns: tuple[str, ...], *, after: uuid.UUID | None = None,
                      before: uuid.UUID | None = None, limit: int = 20000) -> list[Row]:
    """`province_rows` for batch deduplication: only `columns` (the compared ones), and `keyed`
    (whether the patient has blocking-key rows) in the same statement; ids in (after, before)."""
    keyed_ = select(KEYS.c.patient_id).where(KEYS.c.patient_id == PATIENTS.c.id).exists().label("keyed")
    q = select(*(PATIENTS.c[c] for c in columns), keyed_).where(PATIENTS.c.custodian == province) \
        .order_by(PATIENTS.c.id).limit(limit)
    if after is not None:
        q = q.where(PATIENTS.c.id > after)
    if before is not None:
        q = q.where(PATIENTS.c.id < before)
    return list(session.execute(q))


def patients_by_ids(session: Session, ids: list[uuid.UUID]) -> list[Row]:
    return list(session.execute(select(PATIENTS).where(PATIENTS.c.id.in_(ids)))) if ids else []


# ---------------------------------------------------------------- dedupe runs

def open_run(session: Session, province: str) -> Row | None:
    return session.execute(select(RUNS).where(RUNS.c.province == province, RUNS.c.status == "running")
                           .order_by(RUNS.c.started_at.desc())).first()


def last_finished(session: Session, province: str) -> datetime | None:
    """When the province's latest finished run ended (None: never)."""
    return session.execute(select(RUNS.c.finished_at).where(RUNS.c.province == province, RUNS.c.status == "done")
                           .order_by(RUNS.c.finished_at.desc()).limit(1)).scalar()


def start_run(session: Session, province: str, model_version: str, blocks_total: int) -> uuid.UUID:
    run_id = uuid.uuid4()
    session.execute(insert(RUNS), [{"id": run_id, "province": province, "model_version": model_version,
                                    "status": "running", "blocks_total": blocks_total, "blocks_done": [],
                                    "pairs_scored": 0, "proposed": 0, "started_at": datetime.now(UTC)}])
    return run_id


def checkpoint(session: Session, run_id: uuid.UUID, blocks_done: list[str], pairs: int, proposed: int,
               done: bool = False) -> None:
    values = {"blocks_done": blocks_done, "pairs_scored": pairs, "proposed": proposed}
    if done:
        values.update(status="done", finished_at=datetime.now(UTC))
    session.execute(update(RUNS).where(RUNS.c.id == run_id).values(**values))
