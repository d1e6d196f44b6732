"""The per-request audit trail: every access to patient data writes its event in the data's own
transaction (DESIGN invariant 4).

Invariants:
- `record` inserts immediately, through the caller's connection, so the event commits or rolls
  back with the data: an access whose event cannot be written is not answered, and a change whose
  event cannot be written is not made.
- Refusals (denied, not found, invalid, unauthenticated) must survive the rollback of the request
  that was refused: the unit of work calls `replay_refusals` after rolling back, which inserts
  them again in a fresh transaction, with any bookkeeping registered by `keep_on_refusal`
  (login-failure counts). Successful events are never replayed: if the transaction failed, the
  access did not happen. Using the request's own connection for this matters on SQLite, where
  a second writer would wait on the request's own lock.
- There is no exemption: system and admin actors are recorded like anyone else.
- Every insert goes through `_insert`, which MACs the row as written (event_mac.py) with the key
  attached to the session, so the sealer can vouch for it.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Iterable

from sqlalchemy import insert
from sqlalchemy.orm import Session

from security.access.principal import AccessContext
from security.audit import event_mac
from security.audit.models import AuditEventRow, AuditEventSubjectRow

SUCCESS = "success"
DENIED = "denied"
NOT_FOUND = "not_found"
INVALID = "invalid"
CONFLICT = "conflict"
UNAUTHENTICATED = "unauthenticated"
ERROR = "error"
OUTCOMES = (SUCCESS, DENIED, NOT_FOUND, INVALID, CONFLICT, UNAUTHENTICATED, ERROR)

_EVENTS = AuditEventRow.__table__
_SUBJECTS = AuditEventSubjectRow.__table__


@dataclass(slots=True)
class PatientRef:
    """What the audit needs to know of a patient: its id and where it belongs."""

    id: uuid.UUID
    province: str | None = None
    district: str | None = None


@dataclass
class AuditTrail:
    context: AccessContext
    _refusals: list[tuple[dict, list[dict]]] = field(default_factory=list)
    _effects: list = field(default_factory=list)
    recorded: int = 0
    touched: list = field(default_factory=list)  # patients of the successful events (an idempotent replay re-audits them)

    def keep_on_refusal(self, effect) -> None:
        """`effect(session)` runs again with the refusals after a rollback."""
        self._effects.append(effect)

    def build(
        self,
        action: str,
        outcome: str,
        *,
        resource_type: str = "Patient",
        resource_id: object | None = None,
        patient: PatientRef | None = None,
        outside_capture_scope: bool = False,
        detail: dict | None = None,
    ) -> dict:
        """The event row, not yet written (for statements that insert it themselves)."""
        assert outcome in OUTCOMES, outcome
        ctx = self.context
        p = ctx.principal
        return {
            "id": uuid.uuid4(),
            "occurred_at": datetime.now(UTC),
            "request_id": ctx.request_id,
            "client_address": ctx.client_address,
            "actor_user_id": p.user_id if p else None,
            "actor_username": p.username if p else None,
            "actor_role": p.role if p else None,
            "actor_scope_level": p.scope.level if p else None,
            "actor_scope_code": p.scope.code if p else None,
            "actor_province": p.scope.province if p else None,
            "actor_district": p.scope.district if p else None,
            "action": action,
            "resource_type": resource_type,
            "resource_id": str(resource_id) if resource_id is not None else None,
            "patient_id": patient.id if patient else None,
            "patient_province": patient.province if patient else None,
            "patient_district": patient.district if patient else None,
            "outcome": outcome,
            "purpose_of_use": ctx.purpose,
            "break_glass": ctx.break_glass,
            "break_glass_reason": ctx.break_glass_reason,
            "outside_capture_scope": outside_capture_scope,
            "detail": detail or {},
        }

    def written(self, row: dict, subject_rows: list[dict] | None = None) -> None:
        """Bookkeeping for an event that has been inserted (by `record` or by a combined statement)."""
        if row["outcome"] != SUCCESS:
            self._refusals.append((row, subject_rows or []))
        else:
            self.touched.extend([row["patient_id"]] if row["patient_id"] else [])
            self.touched.extend(s["patient_id"] for s in subject_rows or [])
        self.recorded += 1

    def refusal(self, row: dict) -> None:
        """A refusal decided but not inserted (the async hot paths answer a refusal by raising):
        the unit of work writes it after its rollback, with the others (`replay_refusals`), once."""
        assert row["outcome"] != SUCCESS, "only refusals are written after the rollback"
        self.written(row)

    def record(
        self,
        session: Session,
        action: str,
        outcome: str,
        *,
        resource_type: str = "Patient",
        resource_id: object | None = None,
        patient: PatientRef | None = None,
        subjects: Iterable[uuid.UUID] = (),
        outside_capture_scope: bool = False,
        detail: dict | None = None,
    ) -> uuid.UUID:
        row = self.build(action, outcome, resource_type=resource_type, resource_id=resource_id, patient=patient,
                         outside_capture_scope=outside_capture_scope, detail=detail)
        subject_rows = [{"event_id": row["id"], "patient_id": s} for s in dict.fromkeys(subjects)]
        _insert(session, row, subject_rows)
        self.written(row, subject_rows)
        return row["id"]

    def refusal_mark(self) -> int:
        return len(self._refusals)

    def rewrite_refusals_since(self, session: Session, mark: int) -> int:
        """After rolling back a savepoint (one item of a batch or Bundle): write again the
        refusals recorded inside it, so a refused item stays on record while the others commit.
        Returns how many were written (0: the item was refused before any service recorded it)."""
        rows = self._refusals[mark:]
        for row, subject_rows in rows:
            _insert(session, row, subject_rows)
        return len(rows)

    def replay_refusals(self, session: Session) -> int:
        """After a rollback: write the refusals again so the attempt stays on record."""
        for row, subject_rows in self._refusals:
            _insert(session, row, subject_rows)
        for effect in self._effects:
            effect(session)
        return len(self._refusals)


def _insert(session: Session, row: dict, subject_rows: list[dict]) -> None:
    event_mac.sign_rows(session, [row], {row["id"]: [s["patient_id"] for s in subject_rows]})
    session.execute(insert(_EVENTS), [row])
    if subject_rows:
        session.execute(insert(_SUBJECTS), subject_rows)
