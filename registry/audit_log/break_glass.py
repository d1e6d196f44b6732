"""The break-glass review queue: every emergency access in the auditor's jurisdiction stays
pending until an auditor records a finding (justified / not justified, with a note).

Invariants:
- The queue is every audit event with `break_glass` set (any outcome: an emergency attempt that
  was refused is still worth a look), in the auditor's scope (`repository._scope`).
- A finding is final: one row per event, the table is append-only in the database, and a second
  finding is a `Conflict` (409) even when two auditors race (the primary key decides).
- An event outside the auditor's jurisdiction, or not a break-glass event, is `NotFound` (404).
- Listing the queue is audited (`audit.review_queue`), recording a finding too (`audit.finding`),
  the latter with the event id as its resource; neither carries the note.
- The note is encrypted (see models.py). It is decrypted only to show it back to auditors in
  scope of the event; an unreadable note is shown as null with `note_unreadable`, never a 500.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import and_, exists, insert, or_, select
from sqlalchemy.exc import IntegrityError

from registry import pagination
from registry.audit_log import repository as repo
from registry.audit_log.models import BreakGlassReviewRow
from registry.audit_log.schemas import EXAMPLE_BREAK_GLASS_READ, AuditEventView
from registry.audit_log.service import as_view
from registry.context import ServiceContext
from registry.errors import Conflict, InvalidInput, NotFound
from registry.text import Text
from security.audit import trail as audit
from security.crypto.errors import CryptoError

REVIEWS = BreakGlassReviewRow.__table__
EVENTS = repo.EVENTS
NOTE_MAX = 1000


class FindingIn(BaseModel):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [
        {"finding": "justified", "note": "Emergency admission confirmed with the facility's register."}]})
    finding: Literal["justified", "not_justified"]
    note: Text | None = Field(None, max_length=NOTE_MAX)


_EXAMPLE_FINDING = {"finding": "justified", "note": "Emergency admission confirmed with the facility's register.",
                    "note_unreadable": False, "reviewer_user_id": "d7c6b5a4-9382-4716-a5b4-c3d2e1f00a1b",
                    "reviewed_at": "2026-11-22T06:30:45.218000Z"}


class FindingView(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [_EXAMPLE_FINDING]})

    finding: str
    note: str | None
    note_unreadable: bool = False
    reviewer_user_id: uuid.UUID
    reviewed_at: datetime


class QueueItem(BaseModel):
    event: AuditEventView
    review: FindingView | None


class QueuePage(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [
        {"items": [{"event": EXAMPLE_BREAK_GLASS_READ, "review": None}], "next_cursor": None}]})

    items: list[QueueItem]
    next_cursor: str | None


def _custodian(ev, ctx: ServiceContext) -> str | None:
    return ev.patient_province or ev.actor_province or ctx.principal.scope.province


def _note(ctx: ServiceContext, review) -> tuple[str | None, bool]:
    if review.note_ct is None:
        return None, False
    try:
        return ctx.runtime.cipher.decrypt(review.note_ct, table="break_glass_reviews", column="note_ct",
                                          row_id=review.event_id, custodian=review.note_custodian), False
    except CryptoError:
        return None, True


def _finding_view(ctx: ServiceContext, r) -> FindingView:
    note, bad = _note(ctx, r)
    return FindingView(finding=r.finding, note=note, note_unreadable=bad, reviewer_user_id=r.reviewer_user_id,
                       reviewed_at=r.reviewed_at)


def queue(ctx: ServiceContext, status: str, cursor: str | None, limit: int) -> QueuePage:
    reviewed = exists().where(REVIEWS.c.event_id == EVENTS.c.id)
    q = select(EVENTS).where(repo._scope(ctx.principal), EVENTS.c.break_glass.is_(True),
                             reviewed if status == "reviewed" else ~reviewed)
    if cursor:
        try:
            ts, rid = pagination.decode(cursor)
        except InvalidInput:
            ctx.trail.record(ctx.session, "audit.review_queue", audit.INVALID, resource_type="AuditEvent", detail={"field": "cursor"})
            raise
        q = q.where(or_(EVENTS.c.occurred_at < ts, and_(EVENTS.c.occurred_at == ts, EVENTS.c.id < rid)))
    rows = ctx.session.execute(q.order_by(EVENTS.c.occurred_at.desc(), EVENTS.c.id.desc()).limit(limit + 1)).all()
    nxt = pagination.encode(rows[limit - 1].occurred_at, rows[limit - 1].id) if len(rows) > limit else None
    rows = rows[:limit]
    found = {}
    if status == "reviewed" and rows:
        found = {r.event_id: r for r in ctx.session.execute(select(REVIEWS).where(REVIEWS.c.event_id.in_([r.id for r in rows])))}
    items = [QueueItem(event=as_view(r), review=_finding_view(ctx, found[r.id]) if r.id in found else None) for r in rows]
    ctx.trail.record(ctx.session, "audit.review_queue", audit.SUCCESS, resource_type="AuditEvent",
                     detail={"status": status, "count": len(items)})
    return QueuePage(items=items, next_cursor=nxt)


def record_finding(ctx: ServiceContext, event_id: uuid.UUID, body: FindingIn) -> FindingView:
    action = "audit.finding"
    ev = ctx.session.execute(select(EVENTS).where(EVENTS.c.id == event_id, repo._scope(ctx.principal),
                                                  EVENTS.c.break_glass.is_(True))).first()
    if ev is None:
        ctx.trail.record(ctx.session, action, audit.NOT_FOUND, resource_type="AuditEvent", resource_id=event_id)
        raise NotFound("no break-glass access with this id in your jurisdiction")
    if ctx.session.execute(select(REVIEWS.c.event_id).where(REVIEWS.c.event_id == event_id)).first():
        ctx.trail.record(ctx.session, action, audit.CONFLICT, resource_type="AuditEvent", resource_id=event_id,
                         detail={"reason": "finding exists"})
        raise Conflict("a finding for this access has already been recorded; findings are final")
    custodian = _custodian(ev, ctx) if body.note is not None else None
    if body.note is not None and custodian is None:
        ctx.trail.record(ctx.session, action, audit.INVALID, resource_type="AuditEvent", resource_id=event_id,
                         detail={"field": "note"})
        raise InvalidInput("this access belongs to no province whose keys could protect a note; record the finding "
                           "without a note", field="note")
    now = datetime.now(UTC)
    note_ct = (ctx.runtime.cipher.encrypt(body.note, table="break_glass_reviews", column="note_ct", row_id=event_id,
                                          custodian=custodian) if body.note is not None else None)
    row = {"event_id": event_id, "finding": body.finding, "note_ct": note_ct, "note_custodian": custodian,
           "reviewer_user_id": ctx.principal.user_id, "reviewed_at": now}
    try:
        with ctx.session.begin_nested():
            ctx.session.execute(insert(REVIEWS), [row])
    except IntegrityError:  # another auditor's finding committed first
        ctx.trail.record(ctx.session, action, audit.CONFLICT, resource_type="AuditEvent", resource_id=event_id,
                         detail={"reason": "finding exists"})
        raise Conflict("a finding for this access has already been recorded; findings are final") from None
    ctx.trail.record(ctx.session, action, audit.SUCCESS, resource_type="AuditEvent", resource_id=event_id,
                     detail={"finding": body.finding, "note": body.note is not None})
    return FindingView(finding=body.finding, note=body.note, reviewer_user_id=ctx.principal.user_id, reviewed_at=now)
