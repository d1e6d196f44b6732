"""Reading a patient and writing its audit event in one database round trip (PostgreSQL).

The hottest path of the registry. On PostgreSQL one statement selects the patient and decides the
outcome from the same scope clause every other query uses (`registry/scoping.py`):

    WITH p  AS (SELECT ... FROM patients WHERE id = :id), one AS (SELECT 1)
    SELECT CASE WHEN p.id IS NULL THEN 'not_found' WHEN <capture scope> THEN 'success'
                WHEN <break-glass allowed> THEN 'success' ELSE 'denied' END, ..., p.*
    FROM one LEFT JOIN p ON true

and a second inserts the event, MACed in Python over the decided row (security/audit/event_mac.py:
the sealer vouches only for events the registry MACed, so the event can no longer be built inside
the SELECT as a data-modifying CTE once did). The event commits with the transaction like any
other: if decryption fails afterwards, the transaction rolls back and the unit of work records
the failure instead. SQLite makes the same decision in Python.

`read_decision_async` is the async hot path's form (registry/async_database.py, PostgreSQL): the
same outcome CASE in a SELECT on an autocommit connection, then, after decryption, the event
insert as the only write: two round trips instead of BEGIN, statement, COMMIT, and the same
guarantees (an answered read has its event committed; a refusal or a failure leaves only its own
event). The sync function stays for SQLite and for callers that already hold a session.
"""

from __future__ import annotations

import uuid
from functools import lru_cache

from sqlalchemy import bindparam, case, false, insert, literal, select, true
from sqlalchemy.engine import Row
from sqlalchemy.orm import Session

from registry import scoping
from registry.async_database import AsyncDatabase, Compiled
from registry.patients.repository import PATIENTS, Access, get
from security.access.principal import Principal, Scope
from security.audit import event_mac
from security.audit.models import AuditEventRow

EVENTS = AuditEventRow.__table__


def read_with_event(session: Session, principal: Principal, patient_id: uuid.UUID, event: dict,
                    *, break_glass_allowed: bool) -> tuple[Row | None, dict]:
    """Returns the patient row (None unless the outcome is success) and the event as written
    (MACed, security/audit/event_mac.py: the MAC needs the decided row, so the event is inserted
    by a second statement in the same transaction)."""
    if session.get_bind().dialect.name == "postgresql":
        row, written = _result(event, session.execute(_decision_select(principal.scope.level, break_glass_allowed),
                                                      _decision_values(principal, patient_id)).one())
    else:
        row, access = get(session, principal, patient_id)
        if row is None:
            outcome, outside = "not_found", False
        elif access is Access.CAPTURE:
            outcome, outside = "success", False
        else:
            outcome, outside = ("success" if break_glass_allowed else "denied"), True
        written = {**event, "outcome": outcome, "outside_capture_scope": outside, "patient_id": row.id if row else None,
                   "patient_province": row.province if row else None, "patient_district": row.district if row else None}
        row = row if outcome == "success" else None
    session.execute(insert(EVENTS), event_mac.sign_rows(session, [written]))
    return row, written


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


def _result(event: dict, result) -> tuple[Row | None, dict]:
    written = {**event, "outcome": result.audit_outcome, "outside_capture_scope": bool(result.audit_outside),
               "patient_id": result.id, "patient_province": result.audit_province, "patient_district": result.audit_district}
    return (result if result.audit_outcome == "success" else None), written


@lru_cache(maxsize=16)
def _decision_select(scope_level: str, break_glass_allowed: bool):
    """The patient and the outcome, decided in SQL, without the event insert. Built once per
    (scope level, break-glass) and cached: constructing the CTE costs about as much as running it."""
    p, one, outcome, outside = _decided(scope_level, break_glass_allowed)
    return (select(outcome.label("audit_outcome"), outside.label("audit_outside"),
                   p.c.province.label("audit_province"), p.c.district.label("audit_district"), p)
            .select_from(one.outerjoin(p, true())))


@lru_cache(maxsize=16)
def _decision(scope_level: str, break_glass_allowed: bool) -> Compiled:
    """`_decision_select` rendered for the async path (which writes the event after decrypting)."""
    return Compiled.of(_decision_select(scope_level, break_glass_allowed))


def _decision_values(principal: Principal, patient_id: uuid.UUID) -> dict:
    return {"patient_id": patient_id, "scope_code": principal.scope.code, "scope_province": principal.scope.province,
            "scope_district": principal.scope.district}


async def read_decision_async(db: AsyncDatabase, conn, principal: Principal, patient_id: uuid.UUID, event: dict,
                              *, break_glass_allowed: bool) -> tuple[Row | None, dict]:
    """The async path's first statement: the row (None unless the outcome is success) and the
    event as it must be written. Nothing is written here: on PostgreSQL's autocommit connection
    the caller decrypts first and then inserts the event as the request's only write, so a
    record that fails to decrypt leaves no success event behind (the unit of work records the
    failure instead), exactly as the one-statement transaction of the sync path does."""
    return _result(event, await db.one(conn, _decision(principal.scope.level, break_glass_allowed),
                                       _decision_values(principal, patient_id)))
