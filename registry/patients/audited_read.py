"""Reading a patient and writing its audit event in one database round trip (PostgreSQL).

The hottest path of the registry. DESIGN section 6: one round trip per request matters more
than anything else. On PostgreSQL a single statement selects the patient, decides the outcome
from the same scope clause every other query uses (`registry/scoping.py`), and inserts the
audit event through a data-modifying CTE:

    WITH p  AS (SELECT ... FROM patients WHERE id = :id),
         one AS (SELECT 1),
         ev AS (INSERT INTO audit_events (...) SELECT ..., CASE WHEN p.id IS NULL THEN 'not_found'
                  WHEN <capture scope> THEN 'success' WHEN <break-glass allowed> THEN 'success'
                  ELSE 'denied' END, ... FROM one LEFT JOIN p ON true RETURNING outcome, ...)
    SELECT ev.outcome, ev.outside_capture_scope, p.* FROM ev LEFT JOIN p ON true

The event commits with the transaction like any other: if decryption fails afterwards, the
transaction rolls back and the unit of work records the failure instead. SQLite has no
data-modifying CTEs, so there the same decision is made in Python over two statements.

`read_decision_async` is the async hot path's form (registry/async_database.py, PostgreSQL): the
same outcome CASE in a SELECT on an autocommit connection, then, after decryption, the event
insert as the only write: two round trips instead of BEGIN, statement, COMMIT, and the same
guarantees (an answered read has its event committed; a refusal or a failure leaves only its own
event). The sync function stays for SQLite and for callers that already hold a session.
"""

from __future__ import annotations

import uuid
from functools import lru_cache

from sqlalchemy import Boolean, bindparam, case, false, insert, literal, select, true
from sqlalchemy.engine import Row
from sqlalchemy.orm import Session

from registry import scoping
from registry.async_database import AsyncDatabase, Compiled
from registry.patients.repository import PATIENTS, Access, get
from security.access.principal import Principal, Scope
from security.audit.models import AuditEventRow

EVENTS = AuditEventRow.__table__
_FROM_PATIENT = ("patient_id", "patient_province", "patient_district", "outcome", "outside_capture_scope")


def read_with_event(session: Session, principal: Principal, patient_id: uuid.UUID, event: dict,
                    *, break_glass_allowed: bool) -> tuple[Row | None, dict]:
    """Returns the patient row (None unless the outcome is success) and the event as written."""
    if session.get_bind().dialect.name == "postgresql":
        return _single_statement(session, principal, patient_id, event, break_glass_allowed)
    row, access = get(session, principal, patient_id)
    if row is None:
        outcome, outside = "not_found", False
    elif access is Access.CAPTURE:
        outcome, outside = "success", False
    else:
        outcome, outside = ("success" if break_glass_allowed else "denied"), True
    written = {**event, "outcome": outcome, "outside_capture_scope": outside, "patient_id": row.id if row else None,
               "patient_province": row.province if row else None, "patient_district": row.district if row else None}
    session.execute(insert(EVENTS), [written])
    return (row if outcome == "success" else None), written


def _decided(scope_level: str, break_glass_allowed: bool):
    """The patient CTE `p` (by `:patient_id`), a one-row CTE to outer-join it to, and the outcome
    and outside-capture-scope CASEs, from the shared scope clause fed placeholder parameters."""
    placeholder = Principal(uuid.UUID(int=0), "", "", Scope(scope_level, bindparam("scope_code"),
                                                          bindparam("scope_province"), bindparam("scope_district")))
    p = select(PATIENTS).where(PATIENTS.c.id == bindparam("patient_id", type_=PATIENTS.c.id.type)).cte("p")
    one = select(literal(1).label("x")).cte("one")
    in_capture = scoping.capture_clause(placeholder, p)
    outcome = case((p.c.id.is_(None), "not_found"), (in_capture, "success"),
                   (true() if break_glass_allowed else false(), "success"), else_="denied")
    outside = case((p.c.id.is_(None), false()), (in_capture, false()), else_=true())
    return p, one, outcome, outside


@lru_cache(maxsize=16)
def _statement(scope_level: str, break_glass_allowed: bool, event_columns: tuple[str, ...]):
    """Built once per (scope level, break-glass) and cached: constructing the CTE costs about as
    much as running it. Every value is a bind parameter; the scope clause is the shared one from
    registry/scoping.py, fed placeholder parameters."""
    p, one, outcome, outside = _decided(scope_level, break_glass_allowed)
    columns = [*event_columns, *_FROM_PATIENT]
    values = [bindparam(f"ev_{name}", type_=EVENTS.c[name].type).label(name) for name in event_columns]
    values += [p.c.id, p.c.province, p.c.district, outcome.label("outcome"), outside.label("outside_capture_scope")]
    ev = (
        insert(EVENTS)
        .from_select(columns, select(*values).select_from(one.outerjoin(p, true())))
        .returning(EVENTS.c.outcome, EVENTS.c.outside_capture_scope.label("outside"), EVENTS.c.patient_province,
                   EVENTS.c.patient_district)
        .cte("ev")
    )
    return (
        select(ev.c.outcome.label("audit_outcome"), ev.c.outside.cast(Boolean).label("audit_outside"),
               ev.c.patient_province.label("audit_province"), ev.c.patient_district.label("audit_district"), p)
        .select_from(ev.outerjoin(p, true()))
    )


def _params(principal: Principal, patient_id: uuid.UUID, event: dict, event_columns: tuple[str, ...]) -> dict:
    params = {f"ev_{k}": event[k] for k in event_columns}
    params.update(patient_id=patient_id, scope_code=principal.scope.code, scope_province=principal.scope.province,
                  scope_district=principal.scope.district)
    return params


def _result(event: dict, result) -> tuple[Row | None, dict]:
    written = {**event, "outcome": result.audit_outcome, "outside_capture_scope": bool(result.audit_outside),
               "patient_id": result.id, "patient_province": result.audit_province, "patient_district": result.audit_district}
    return (result if result.audit_outcome == "success" else None), written


def _single_statement(session, principal, patient_id, event, break_glass_allowed):
    event_columns = tuple(k for k in event if k not in _FROM_PATIENT)
    stmt = _statement(principal.scope.level, break_glass_allowed, event_columns)
    return _result(event, session.execute(stmt, _params(principal, patient_id, event, event_columns)).one())


@lru_cache(maxsize=16)
def _decision(scope_level: str, break_glass_allowed: bool) -> Compiled:
    """The patient and the outcome, decided in SQL by the same CASE as `_statement`, without the
    event insert (the async path writes the event after decrypting)."""
    p, one, outcome, outside = _decided(scope_level, break_glass_allowed)
    return Compiled.of(select(outcome.label("audit_outcome"), outside.label("audit_outside"),
                              p.c.province.label("audit_province"), p.c.district.label("audit_district"), p)
                       .select_from(one.outerjoin(p, true())))


async def read_decision_async(db: AsyncDatabase, conn, principal: Principal, patient_id: uuid.UUID, event: dict,
                              *, break_glass_allowed: bool) -> tuple[Row | None, dict]:
    """The async path's first statement: the row (None unless the outcome is success) and the
    event as it must be written. Nothing is written here: on PostgreSQL's autocommit connection
    the caller decrypts first and then inserts the event as the request's only write, so a
    record that fails to decrypt leaves no success event behind (the unit of work records the
    failure instead), exactly as the one-statement transaction of the sync path does."""
    values = {"patient_id": patient_id, "scope_code": principal.scope.code, "scope_province": principal.scope.province,
              "scope_district": principal.scope.district}
    return _result(event, await db.one(conn, _decision(principal.scope.level, break_glass_allowed), values))
