"""Writing a request's audit event from the event loop (the async hot paths, PostgreSQL).

The same row as `AuditTrail.record` writes (built by `AuditTrail.build`, booked by
`AuditTrail.written`, so refusals are replayed by the unit of work exactly as for sync
routes), in one statement with its subject rows:

    WITH ev AS (INSERT INTO audit_events (...) VALUES (...) RETURNING id)
    INSERT INTO audit_event_subjects (event_id, patient_id) SELECT ev.id, unnest(:subjects) FROM ev

A data-modifying CTE always runs to completion, so the event is written when there are no
subjects too. The row is MACed as written (security/audit/event_mac.py) with the pool's key.
"""

from __future__ import annotations

import uuid
from typing import Iterable

from sqlalchemy import ARRAY, Uuid, bindparam, func, select
from sqlalchemy import insert as sql_insert

from registry.async_database import AsyncDatabase, Compiled
from security.audit.models import AuditEventRow, AuditEventSubjectRow
from security.audit.trail import AuditTrail, PatientRef

EVENTS = AuditEventRow.__table__
SUBJECTS = AuditEventSubjectRow.__table__


def _statement() -> Compiled:
    ev = (sql_insert(EVENTS).values({c.name: bindparam(c.name, type_=c.type) for c in EVENTS.columns})
          .returning(EVENTS.c.id).cte("ev"))
    subjects = func.unnest(bindparam("subjects", type_=ARRAY(Uuid())))
    return Compiled.of(sql_insert(SUBJECTS).from_select(["event_id", "patient_id"], select(ev.c.id, subjects).select_from(ev)))


_INSERT = _statement()


async def record(db: AsyncDatabase, conn, trail: AuditTrail, action: str, outcome: str, *,
                 resource_type: str = "Patient", resource_id: object | None = None, patient: PatientRef | None = None,
                 subjects: Iterable[uuid.UUID] = (), outside_capture_scope: bool = False,
                 detail: dict | None = None) -> uuid.UUID:
    row = trail.build(action, outcome, resource_type=resource_type, resource_id=resource_id, patient=patient,
                      outside_capture_scope=outside_capture_scope, detail=detail)
    await insert(db, conn, trail, row, subjects)
    return row["id"]


async def insert(db: AsyncDatabase, conn, trail: AuditTrail, row: dict, subjects: Iterable[uuid.UUID] = ()) -> None:
    """Insert an event built by `trail.build` (and completed by the caller) with its subjects."""
    subject_ids = list(dict.fromkeys(subjects))
    row["mac"] = db.event_mac.tag(row, subject_ids) if db.event_mac is not None else None
    await db.execute(conn, _INSERT, {**row, "subjects": subject_ids})
    trail.written(row, [{"event_id": row["id"], "patient_id": s} for s in subject_ids])


def book_refusal(trail: AuditTrail, action: str, outcome: str, *, subjects: Iterable[uuid.UUID] = (), **event) -> None:
    """A refusal decided on the async unit of work: booked on the trail, not inserted; the unit of
    work writes it after its rollback, with its subjects (`AuditTrail.replay_refusals`)."""
    row = trail.build(action, outcome, **event)
    trail.written(row, [{"event_id": row["id"], "patient_id": s} for s in dict.fromkeys(subjects)])


def after(ctes: list):
    """The audit event (parameters `ev_<column>`) and its `subjects` as the last statement of a
    request's writes, which run first as the data-modifying CTEs `ctes`: one round trip."""
    ev = sql_insert(EVENTS).values({c.name: bindparam(f"ev_{c.name}", type_=c.type) for c in EVENTS.columns}) \
        .returning(EVENTS.c.id).cte("ev")
    subjects = func.unnest(bindparam("subjects", type_=ARRAY(Uuid())))
    return sql_insert(SUBJECTS).from_select(["event_id", "patient_id"], select(ev.c.id, subjects).select_from(ev)).add_cte(*ctes)


def after_values(row: dict, subjects: list, event_mac) -> dict:
    """`after`'s parameters for an event built by `trail.build`, MACed as written."""
    row["mac"] = event_mac.tag(row, subjects) if event_mac is not None else None
    return {**{f"ev_{k}": v for k, v in row.items()}, "subjects": subjects}
