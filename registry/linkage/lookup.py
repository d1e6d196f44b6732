"""The registration check's SQL, as Core statements usable from a sync Session or an async connection.

One round trip on PostgreSQL: the blocking-key lookup (patients in the caller's capture or
search scope whose keyed blocking key is one of the new record's) and, when the caller passes
them, the INSERT of the new record's own key rows, as a data-modifying CTE of the same
statement. The key rows reference a patient the same transaction inserts afterwards: the
foreign key is checked at commit (migration 0038), so a refused registration, which rolls back,
leaves no key behind. The lookup does not see the rows its own CTE writes (one snapshot per
statement), and the new record is excluded by id anyway.

Every value is a parameter (arrays on PostgreSQL), so the text is one per pair of scopes and
psycopg prepares it. SQLite (no data-modifying CTE; no round trip to save) runs the lookup, then
the INSERT.

For an async connection (PostgreSQL):
    stmt = lookup.statement(p.scope, p.search_scope, "postgresql", store=bool(keys))
    rows = lookup.matching((await conn.execute(stmt, lookup.params(wanted, keys))).all(), wanted, exclude)
"""

from __future__ import annotations

import functools
import uuid

from sqlalchemy import ARRAY, Integer, Select, any_, bindparam, func, insert, literal, or_, select, union_all
from sqlalchemy.engine import Row
from sqlalchemy.orm import Session

from registry import scoping
from registry.linkage.match_models import LinkKey
from registry.patients.models import Patient, PatientIdentifierIndex
from security.access.principal import Principal, Scope

PATIENTS = Patient.__table__
KEYS = LinkKey.__table__
INDEX = PatientIdentifierIndex.__table__

Wanted = dict[str, list[tuple[str, int]]]  # kind -> [(custodian, bidx)] (records.lookup_keys)


@functools.lru_cache(maxsize=512)
def statement(capture: Scope, search: Scope, dialect: str, *, store: bool = False) -> Select:
    """The lookup for one pair of scopes (frozen, compared by every field), built once per
    process. Parameters: `bidx` (the looked-up values: PostgreSQL one array, SQLite an expanding
    IN); with `store` (PostgreSQL only) `k_patient`, `k_custodian`, `k_kinds`, `k_bidx`: the new
    record's key rows, written by the same statement. Result: patient columns and the matched
    key's `key_kind`, `key_custodian`, `key_bidx`, to be filtered by `matching`."""
    if dialect == "postgresql":
        bidx = KEYS.c.bidx == any_(bindparam("bidx", type_=ARRAY(Integer)))
    else:
        if store:
            raise ValueError("SQLite has no data-modifying CTE: write the keys with a second statement (`run`)")
        bidx = KEYS.c.bidx.in_(bindparam("bidx", expanding=True))
    scope = or_(scoping.scope_clause(capture, PATIENTS), scoping.scope_clause(search, PATIENTS))
    q = (select(PATIENTS, KEYS.c.kind.label("key_kind"), KEYS.c.custodian.label("key_custodian"),
                KEYS.c.bidx.label("key_bidx"))
         .join(KEYS, KEYS.c.patient_id == PATIENTS.c.id).where(bidx, scope))
    if store:
        q = q.add_cte(_insert_keys().cte("new_keys"))
    return q


@functools.lru_cache(maxsize=512)
def registration_statement(capture: Scope, search: Scope):
    """PostgreSQL: `statement(..., store=True)` and, in the same round trip, the probe of an
    exact identifier (the new health ID's uniqueness: registry/patients/service.register): rows
    of patients holding one of the blind-index values `id_bidx` of the system `id_system`, told
    apart by `key_kind` = "id:<column>" (never a blocking-key kind, so `matching` leaves them out;
    `probed` picks them). Parameters: those of `statement` with store, and `id_system`, `id_bidx`."""
    link = statement(capture, search, "postgresql")
    ident = (select(PATIENTS, (literal("id:") + INDEX.c.column).label("key_kind"), INDEX.c.custodian.label("key_custodian"),
                    INDEX.c.bidx.label("key_bidx"))
             .join(INDEX, INDEX.c.patient_id == PATIENTS.c.id)
             .where(INDEX.c.system == bindparam("id_system", type_=INDEX.c.system.type),
                    INDEX.c.bidx == any_(bindparam("id_bidx", type_=ARRAY(Integer)))))
    return union_all(link, ident).add_cte(_insert_keys().cte("new_keys"))


def probed(rows, by_custodian: dict[str, int]) -> list[tuple[Row, str]]:
    """The probe's rows whose value is their custodian's, with the matched column (unconfirmed:
    a blind index value is shared by design; the caller decrypts and compares)."""
    return [(r, r.key_kind[3:]) for r in rows
            if r.key_kind.startswith("id:") and by_custodian.get(r.key_custodian) == r.key_bidx]


def _insert_keys():
    """INSERT INTO link_keys SELECT :k_patient, u.kind, :k_custodian, u.bidx FROM unnest(:k_kinds, :k_bidx)."""
    u = func.unnest(bindparam("k_kinds", type_=ARRAY(KEYS.c.kind.type)),
                    bindparam("k_bidx", type_=ARRAY(Integer))).table_valued("kind", "bidx").render_derived("u")
    rows = select(bindparam("k_patient", type_=KEYS.c.patient_id.type), u.c.kind,
                  bindparam("k_custodian", type_=KEYS.c.custodian.type), u.c.bidx)
    return insert(KEYS).from_select(["patient_id", "kind", "custodian", "bidx"], rows)


def params(wanted: Wanted, keys: list[dict] | None = None) -> dict:
    """The statement's parameters: the looked-up values and, for `store`, the key rows of one
    patient (records.key_rows)."""
    out: dict = {"bidx": sorted({v for pairs in wanted.values() for _, v in pairs})}
    if keys:
        out.update(k_patient=keys[0]["patient_id"], k_custodian=keys[0]["custodian"],
                   k_kinds=[k["kind"] for k in keys], k_bidx=[k["bidx"] for k in keys])
    return out


def matching(rows, wanted: Wanted, exclude: uuid.UUID | None = None) -> list[Row]:
    """The distinct patients whose (kind, custodian, bidx) is one of `wanted` (the statement
    probes bidx values only), except `exclude`."""
    return matching_triples(rows, {(kind, c, v) for kind, pairs in wanted.items() for c, v in pairs}, exclude)


def matching_triples(rows, want: set[tuple[str, str, int]], exclude: uuid.UUID | None = None) -> list[Row]:
    """`matching` with the wanted keys as (kind, custodian, bidx) triples (the registration on the
    event loop, registry/patients/async_register.py, runs this statement inside its own)."""
    out: dict[uuid.UUID, Row] = {}
    for r in rows:
        if (r.key_kind, r.key_custodian, r.key_bidx) in want and r.id != exclude:
            out.setdefault(r.id, r)
    return list(out.values())


def run(session: Session, principal: Principal, wanted: Wanted, keys: list[dict] | None = None,
        exclude: uuid.UUID | None = None, probe: tuple[str, dict[str, int]] | None = None):
    """Candidates in the principal's scope; `keys` (one patient's key rows) written on the way:
    in the lookup's statement on PostgreSQL, after it on SQLite. With `probe` (system, custodian
    -> blind-index value): (candidates, `probed` rows), the probe in the same statement on
    PostgreSQL (`registration_statement`), by patients/repository.candidates on SQLite."""
    if keys:
        assert len({(k["patient_id"], k["custodian"]) for k in keys}) == 1, "key rows of one patient"
    dialect = session.get_bind().dialect.name
    if probe is not None:
        if dialect == "postgresql" and keys and probe[1]:
            rows = session.execute(registration_statement(principal.scope, principal.search_scope),
                                   {**params(wanted, keys), "id_system": probe[0],
                                    "id_bidx": sorted(set(probe[1].values()))}).all()
            return matching(rows, wanted, exclude), probed(rows, probe[1])
        from registry.patients import repository as patients_repo

        return run(session, principal, wanted, keys, exclude), patients_repo.candidates(session, *probe)
    one_trip = dialect == "postgresql" and bool(keys)
    if not wanted or not any(wanted.values()):
        rows = []
    else:
        rows = session.execute(statement(principal.scope, principal.search_scope, dialect, store=one_trip),
                               params(wanted, keys if one_trip else None)).all()
        rows = matching(rows, wanted, exclude)
    if keys and not (one_trip and wanted and any(wanted.values())):
        session.execute(insert(KEYS), keys)
    return rows
