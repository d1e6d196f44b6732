"""Patient queries. Every read takes the acting principal; scope is part of the query.

Hot paths are single Core statements (no ORM unit-of-work per row): read by id is one SELECT,
search is one SELECT joining the blind index, register inserts the patient and its index rows
in one statement on PostgreSQL (a data-modifying CTE; two INSERTs on SQLite).
"""

from __future__ import annotations

import enum
import uuid
from datetime import datetime
from functools import lru_cache

from sqlalchemy import ARRAY, Integer, any_, bindparam, delete, insert, select, true, union_all, update
from sqlalchemy.engine import Row
from sqlalchemy.orm import Session

from registry import pagination, scoping
from registry.patients.models import Patient, PatientIdentifierIndex
from security.access.principal import Principal

PATIENTS = Patient.__table__
INDEX = PatientIdentifierIndex.__table__


class Access(enum.Enum):
    CAPTURE = "capture"
    SEARCH = "search"  # only findable by exact identifier
    NONE = "none"


def access_to(principal: Principal, row: Row) -> Access:
    where = {"province": row.province, "district": row.district, "facility": row.home_facility}
    if scoping.in_capture(principal, **where):
        return Access.CAPTURE
    if scoping.in_search(principal, **where):
        return Access.SEARCH
    return Access.NONE


def get(session: Session, principal: Principal, patient_id: uuid.UUID, *,
        key_share: bool = False) -> tuple[Row | None, Access]:
    """The row (or None) and how far `principal` may reach it; the caller decides what to do.
    `key_share`: read it `FOR KEY SHARE` (PostgreSQL; see `lock_for_doses`)."""
    q = select(PATIENTS).where(PATIENTS.c.id == patient_id)
    if key_share:
        q = q.with_for_update(read=True, key_share=True)  # FOR KEY SHARE; nothing on SQLite
    row = session.execute(q).first()
    return row, (access_to(principal, row) if row is not None else Access.NONE)


def lock_for_doses(session: Session, patient_ids) -> None:
    """Before reading patients that doses will be written for: lock them `FOR KEY SHARE`
    (PostgreSQL), in id order as a merge locks its two rows, so that a merge (which locks both
    records `FOR UPDATE`, registry/linkage/steward_repository.mark_merged) either waits for the
    dose to commit and then moves it, or has committed before the dose's patient is read again,
    which then sees `merged_into` (issue 13). `FOR KEY SHARE` is the lock the dose's foreign key
    takes anyway: concurrent doses and patient updates do not wait for each other. SQLite needs
    nothing: BEGIN IMMEDIATE serialises its writers."""
    if session.get_bind().dialect.name != "postgresql":
        return
    statements = lock_for_doses_sql(patient_ids)
    if not statements:
        return
    conn = session.connection()
    with conn.connection.driver_connection.cursor() as cur:
        for sql, params in statements:
            cur.execute(sql, params)


def lock_for_doses_sql(patient_ids) -> list[tuple[str, list]]:
    """PostgreSQL: `lock_for_doses`'s statements (sql, params), for a caller that sends them in
    one pipeline with the read that must follow them (registry/immunizations/batch.py)."""
    ids = sorted(set(patient_ids), key=str)
    return [(f"SELECT id FROM {PATIENTS.name} WHERE id = ANY(%s) ORDER BY id FOR KEY SHARE", [ids[i:i + 20000]])
            for i in range(0, len(ids), 20000)]


def insert_patient(session: Session, row: dict, index_rows: list[dict]) -> None:
    """The patient row and its blind-index rows (which must all be the patient's own)."""
    if index_rows and session.get_bind().dialect.name == "postgresql":
        assert all(r["patient_id"] == row["id"] for r in index_rows)
        params = {f"p_{k}": v for k, v in row.items()}
        for n, r in enumerate(index_rows):
            params.update({f"i{n}_{k}": r[k] for k in _INDEX_VALUES})
        session.execute(_insert_with_index(tuple(row), len(index_rows)), params)
        return
    session.execute(insert(PATIENTS), [row])
    if index_rows:
        session.execute(insert(INDEX), index_rows)


_INDEX_VALUES = ("column", "system", "custodian", "bidx")


@lru_cache(maxsize=64)
def _insert_with_index(columns: tuple[str, ...], n: int):
    """WITH p AS (INSERT INTO patients ... RETURNING id) INSERT INTO patient_identifier_index
    SELECT p.id, v.* FROM p JOIN (SELECT :i0_column, ... UNION ALL ...) v ON true: one round
    trip instead of two. Built once per column set and row count; every value is a parameter."""
    p = insert(PATIENTS).values({c: bindparam(f"p_{c}", type_=PATIENTS.c[c].type) for c in columns}) \
        .returning(PATIENTS.c.id).cte("p")
    rows = [select(*(bindparam(f"i{k}_{c}", type_=INDEX.c[c].type).label(c) for c in _INDEX_VALUES)) for k in range(n)]
    v = (union_all(*rows) if n > 1 else rows[0]).subquery("v")
    return insert(INDEX).from_select(("patient_id", *_INDEX_VALUES),
                                     select(p.c.id, *(v.c[c] for c in _INDEX_VALUES)).select_from(p.join(v, true())))


def candidates(session: Session, system: str, by_custodian: dict[str, int]) -> list[tuple[Row, str]]:
    """Rows whose blind index matches, with the matched column. *Not confirmed*: the caller
    decrypts that column and compares, because a 26-bit index value is shared by design."""
    if not by_custodian:
        return []
    if session.get_bind().dialect.name == "postgresql":  # one cached statement, whatever the number of values
        rows = session.execute(candidates_statement(), {"system": system, "bidx": sorted(set(by_custodian.values()))})
        return matching_custodian(rows.all(), by_custodian)
    q = (
        select(PATIENTS, INDEX.c.column.label("matched_column"), INDEX.c.custodian.label("idx_custodian"),
               INDEX.c.bidx.label("idx_bidx"))
        .join(INDEX, INDEX.c.patient_id == PATIENTS.c.id)
        .where(INDEX.c.system == system, INDEX.c.bidx.in_(sorted(set(by_custodian.values()))))
    )
    return matching_custodian(session.execute(q).all(), by_custodian)


@lru_cache(maxsize=1)
def candidates_statement():
    """`candidates` as one statement with the index values as an array parameter (`system`,
    `bidx`), for the async search (PostgreSQL); the caller filters by custodian as `candidates` does."""
    return (
        select(PATIENTS, INDEX.c.column.label("matched_column"), INDEX.c.custodian.label("idx_custodian"),
               INDEX.c.bidx.label("idx_bidx"))
        .join(INDEX, INDEX.c.patient_id == PATIENTS.c.id)
        .where(INDEX.c.system == bindparam("system", type_=INDEX.c.system.type),
               INDEX.c.bidx == any_(bindparam("bidx", type_=ARRAY(Integer))))
    )


def matching_custodian(rows, by_custodian: dict[str, int]) -> list[tuple[Row, str]]:
    return [(r, r.matched_column) for r in rows if by_custodian.get(r.idx_custodian) == r.idx_bidx]


def current():
    """The condition "not merged into another record" (issue 13): lists, searches and exports
    show each child once, on its surviving record; a merged id still resolves when read by id."""
    return PATIENTS.c.merged_into.is_(None)


def list_in_capture(session: Session, principal: Principal, *, cursor: str | None, limit: int) -> tuple[list[Row], str | None]:
    q = select(PATIENTS).where(scoping.capture_clause(principal, PATIENTS), current())
    return pagination.newest_first(session, q, PATIENTS.c.created_at, PATIENTS.c.id, cursor=cursor, limit=limit)


def survivor_of(session: Session, row: Row) -> Row:
    """The record a merged record now lives on (following a chain of merges), or `row` itself."""
    seen = {row.id}
    while row.merged_into is not None and row.merged_into not in seen:
        seen.add(row.merged_into)
        row = session.execute(select(PATIENTS).where(PATIENTS.c.id == row.merged_into)).one()
    return row


def merged_chain(session: Session, survivor_id: uuid.UUID) -> list[uuid.UUID]:
    """Every record merged into `survivor_id`, directly or through a chain of merges."""
    found: list[uuid.UUID] = []
    frontier = [survivor_id]
    while frontier:
        ids = session.execute(select(PATIENTS.c.id).where(PATIENTS.c.merged_into.in_(frontier))).scalars().all()
        frontier = [i for i in ids if i not in found and i != survivor_id]
        found.extend(frontier)
    return found


def replaced_by(session: Session, patient_id: uuid.UUID) -> list[uuid.UUID]:
    """The records merged directly into this one (issue 13), oldest id first."""
    q = select(PATIENTS.c.id).where(PATIENTS.c.merged_into == patient_id).order_by(PATIENTS.c.id)
    return list(session.execute(q).scalars())


def update_if_version(session: Session, patient_id: uuid.UUID, expected_version: int, values: dict, now: datetime) -> bool:
    res = session.execute(
        update(PATIENTS)
        .where(PATIENTS.c.id == patient_id, PATIENTS.c.version == expected_version)
        .values(**values, version=expected_version + 1, updated_at=now)
    )
    return res.rowcount == 1


def replace_index(session: Session, patient_id: uuid.UUID, columns: list[str], rows: list[dict]) -> None:
    session.execute(delete(INDEX).where(INDEX.c.patient_id == patient_id, INDEX.c.column.in_(columns)))
    if rows:
        session.execute(insert(INDEX), rows)


def lock_identifier(session: Session, keyring, system: str, normalised: str) -> None:
    """Serialise concurrent registrations of the same identifier (PostgreSQL advisory lock, held
    to the end of the transaction). The lock id is a keyed hash, so pg_locks shows no identifier.
    SQLite needs nothing: its writers are already serialised by BEGIN IMMEDIATE."""
    if session.get_bind().dialect.name != "postgresql":
        return
    import hashlib
    import hmac

    from sqlalchemy import text

    digest = hmac.new(keyring.secret("lock-key"), f"{system}\x00{normalised}".encode(), hashlib.sha256).digest()
    session.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": int.from_bytes(digest[:8], "big", signed=True)})
