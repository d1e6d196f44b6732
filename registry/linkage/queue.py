"""The data steward's review queue and one candidate pair side by side (issue 13).

- The queue lists open and unsure pairs with at least one record in the steward's capture
  scope, certain first, then by match weight; it shows ids, scores and plain-language reasons,
  never a name or identifier. One `linkage.queue` event per page, the pairs' records as subjects.
- A pair view decrypts, for the steward only, each record in its capture scope with its doses;
  the other record of a cross-province pair shows identity-confirmation fields only (as an
  identifier search outside capture scope does: no contact details, no national ID numbers,
  no doses). Every record viewed writes its own `linkage.view` event (DESIGN 3.4).
- A pair with neither record in scope answers 404 (one `denied` event), like any read outside scope.
"""

from __future__ import annotations

import uuid

from registry.context import ServiceContext
from registry.errors import InvalidInput, NotFound
from registry.immunizations.service import to_view as dose_view
from registry.linkage import steward_repository as repo
from registry.linkage.decision_notes import read_note
from registry.linkage.merge import in_capture, ref, refuse
from registry.linkage.reasons import explain
from registry.linkage.steward_schemas import PairRecord, PairView, QueueItem, QueuePage
from registry.patients import codec
from security.audit import trail as audit

QUEUE, VIEW = "linkage.queue", "linkage.view"
NOT_FOUND = "candidate pair not found"
RESOURCE = "LinkCandidate"


def item(row, cross_province: bool) -> QueueItem:
    return QueueItem(id=row.id, version=row.version, left_id=row.left_id, right_id=row.right_id, grade=row.grade,
                     match_weight=row.match_weight, match_probability=row.match_probability, status=row.status,
                     source=row.source, cross_province=cross_province, reasons=explain(row.levels),
                     created_at=row.created_at)


def review_queue(ctx: ServiceContext, statuses: tuple[str, ...], cursor: str | None, limit: int) -> QueuePage:
    try:
        rows, nxt = repo.queue(ctx.session, ctx.principal, statuses=statuses, cursor=cursor, limit=limit)
    except InvalidInput as exc:
        raise refuse(ctx, QUEUE, exc) from None
    items = [item(r, r.left_province != r.right_province) for r in rows]
    ctx.trail.record(ctx.session, QUEUE, audit.SUCCESS, resource_type=RESOURCE,
                     subjects=[pid for r in rows for pid in (r.left_id, r.right_id)], detail={"count": len(items)})
    return QueuePage(items=items, next_cursor=nxt)


def pair_in_reach(ctx: ServiceContext, candidate_id: uuid.UUID, action: str):
    """(candidate, {patient id: row}, {patient id: in capture scope}) or an audited 404."""
    cand = repo.candidate(ctx.session, candidate_id)
    if cand is None:
        ctx.trail.record(ctx.session, action, audit.NOT_FOUND, resource_type=RESOURCE, resource_id=candidate_id)
        raise NotFound(NOT_FOUND)
    rows = repo.patients(ctx.session, [cand.left_id, cand.right_id])
    inside = {pid: in_capture(ctx, row) for pid, row in rows.items()}
    if not any(inside.values()):
        ctx.trail.record(ctx.session, action, audit.DENIED, resource_type=RESOURCE, resource_id=candidate_id,
                         subjects=list(rows), outside_capture_scope=True)
        raise NotFound(NOT_FOUND)
    return cand, rows, inside


def suggested_survivor(ctx: ServiceContext, rows: dict) -> uuid.UUID:
    """The record with more doses; on a tie, the older record (registered first)."""
    counts = {pid: len(repo.doses_of(ctx.session, pid)) for pid in rows}
    return min(rows.values(), key=lambda r: (-counts[r.id], r.created_at, str(r.id))).id


def view_pair(ctx: ServiceContext, candidate_id: uuid.UUID) -> PairView:
    cand, rows, inside = pair_in_reach(ctx, candidate_id, VIEW)
    cipher = ctx.runtime.cipher
    best = suggested_survivor(ctx, rows)
    sides = {}
    for pid in (cand.left_id, cand.right_id):
        row, full = rows[pid], inside[pid]
        doses = [dose_view(ctx, d) for d in repo.doses_of(ctx.session, pid)] if full else None
        sides[pid] = PairRecord(record=codec.to_match(cipher, row, full=full), immunizations=doses,
                                suggested_survivor=pid == best)
    for pid in (cand.left_id, cand.right_id):  # one event per record viewed
        ctx.trail.record(ctx.session, VIEW, audit.SUCCESS, resource_id=pid, patient=ref(rows[pid]),
                         outside_capture_scope=not inside[pid],
                         detail={"candidate_id": str(cand.id), "fields": "full" if inside[pid] else "identity"})
    note, unreadable = read_note(ctx, cand)
    return PairView(candidate=item(cand, rows[cand.left_id].province != rows[cand.right_id].province),
                    left=sides[cand.left_id], right=sides[cand.right_id], note=note, note_unreadable=unreadable)
