"""Merge and unmerge (issue 13, DESIGN 8). Each use case writes exactly one audit event.

Merge: the survivor keeps its row; the merged record keeps its row too, marked
`merged_into = survivor` (never deleted: its id still resolves, see patients.service), and every
dose it owned moves to the survivor remembering its first owner (`original_patient_id`). A
`link_merges` row lists the moved doses with their previous `original_patient_id`, so that an
unmerge restores every owner exactly, even after later doses were recorded on the survivor
(those stay with the survivor unless the steward names them). Both patients are queued for the
coverage aggregates (registry/reports/queue) and their versions and change positions move, so
devices learn the merge from the changes feed.

Who: a data steward whose capture scope holds the record that is replaced. The survivor must be
in scope too, unless the two are a candidate pair in the steward's queue (a cross-province pair:
a steward may fold a record of its own province into the other province's, never the reverse).
Anything else answers 404, as a read outside scope would.

Refusals with a reason code (409, problem+json member `reason`): `same_record` (merging a record
into itself), `already_merged` (the record was merged, possibly by a concurrent decision),
`survivor_merged` (the chosen survivor is itself replaced; merge into its survivor, or unmerge
the later merge first), `not_merged` (unmerging a record that is not merged), `already_decided`
(a concurrent decision on the same pair won; see decisions.py).
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

from registry import scoping
from registry.context import ServiceContext
from registry.errors import Conflict, DomainError, InvalidInput, NotFound, audit_outcome
from registry.linkage import node_feed
from registry.linkage import steward_repository as repo
from registry.linkage.steward_schemas import MergeRequest, MergeView, UnmergeRequest
from registry.reports import queue as report_queue
from security.audit import trail as audit
from security.audit.trail import PatientRef

NOT_FOUND = "patient not found"
MERGE, UNMERGE = "linkage.merge", "linkage.unmerge"
RESOURCE = "Patient"


class LinkageConflict(Conflict):
    """A 409 whose problem carries `reason`, a stable code clients can act on."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.extensions = {"reason": reason}


def ref(row) -> PatientRef:
    return PatientRef(row.id, row.province, row.district)


def in_capture(ctx: ServiceContext, row) -> bool:
    return scoping.in_capture(ctx.principal, province=row.province, district=row.district, facility=row.home_facility)


def refuse(ctx: ServiceContext, action: str, exc: DomainError, **event) -> DomainError:
    """Record the refusal (one event, outcome from the error) and hand the error back to raise."""
    detail = dict(event.pop("detail", None) or {})
    if isinstance(exc, LinkageConflict):
        detail["reason"] = exc.reason
    if exc.field:
        detail["field"] = exc.field
    ctx.trail.record(ctx.session, action, audit_outcome(exc), resource_type=RESOURCE, detail=detail or None, **event)
    return exc


def view(row) -> MergeView:
    return MergeView(
        id=row["id"], version=row["version"], candidate_id=row["candidate_id"], survivor_id=row["survivor_id"],
        merged_id=row["merged_id"], moved_dose_ids=[uuid.UUID(d) for d, _ in row["moved_doses"]],
        merged_by=row["merged_by"], merged_at=row["merged_at"], unmerged_by=row.get("unmerged_by"),
        unmerged_at=row.get("unmerged_at"),
        unmerge_moved_dose_ids=[uuid.UUID(d) for d in row["unmerge_moved"]] if row.get("unmerge_moved") is not None else None)


def apply_merge(ctx: ServiceContext, survivor, merged, candidate_id: uuid.UUID | None) -> dict:
    """The merge itself, no audit (the calling use case records its one event). Raises
    LinkageConflict; the caller's transaction then rolls back, so nothing is half-applied."""
    if survivor.id == merged.id:
        raise LinkageConflict("same_record", "a record cannot be merged into itself")
    if merged.merged_into is not None:
        raise LinkageConflict("already_merged", "this record has already been merged into another")
    if survivor.merged_into is not None:
        raise LinkageConflict("survivor_merged", "the chosen survivor has itself been merged into another record")
    now = datetime.now(UTC)
    if not repo.mark_merged(ctx.session, merged.id, survivor.id, now):
        raise LinkageConflict("already_merged", "one of the records was merged by a concurrent decision")
    moved = repo.move_doses(ctx.session, merged.id, survivor.id, now)
    row = {"id": uuid.uuid4(), "version": 1, "candidate_id": candidate_id, "survivor_id": survivor.id,
           "merged_id": merged.id, "moved_doses": moved, "merged_by": ctx.principal.user_id, "merged_at": now,
           "unmerged_by": None, "unmerged_at": None, "unmerge_moved": None}
    repo.insert_merge(ctx.session, row)
    report_queue.mark(ctx.session, survivor.id)  # the survivor is re-judged with its new doses
    report_queue.mark(ctx.session, merged.id)  # the merged record stops counting
    node_feed.forget(ctx.session, merged.id, now)  # its encoding leaves the node's feed (a tombstone for the comparer)
    return row


def merge(ctx: ServiceContext, body: MergeRequest) -> MergeView:
    """A direct merge of two records, both in the steward's capture scope."""
    ids = [body.survivor_id, body.merged_id]
    if body.survivor_id == body.merged_id:
        raise refuse(ctx, MERGE, LinkageConflict("same_record", "a record cannot be merged into itself"),
                     resource_id=body.merged_id)
    rows = repo.patients(ctx.session, ids)
    if len(rows) < 2:
        raise refuse(ctx, MERGE, NotFound(NOT_FOUND), subjects=list(rows))
    survivor, merged = rows[body.survivor_id], rows[body.merged_id]
    if not (in_capture(ctx, survivor) and in_capture(ctx, merged)):
        ctx.trail.record(ctx.session, MERGE, audit.DENIED, resource_type=RESOURCE, resource_id=merged.id,
                         patient=ref(merged), subjects=ids, outside_capture_scope=True)
        raise NotFound(NOT_FOUND)
    try:
        row = apply_merge(ctx, survivor, merged, None)
    except LinkageConflict as exc:
        raise refuse(ctx, MERGE, exc, resource_id=merged.id, patient=ref(merged), subjects=ids) from None
    ctx.trail.record(ctx.session, MERGE, audit.SUCCESS, resource_type=RESOURCE, resource_id=merged.id, patient=ref(merged),
                     subjects=ids, detail={"merge_id": str(row["id"]), "doses_moved": len(row["moved_doses"])})
    return view(row)


def unmerge(ctx: ServiceContext, patient_id: uuid.UUID, body: UnmergeRequest) -> MergeView:
    """Restore a merged record and every dose's owner as before the merge."""
    rows = repo.patients(ctx.session, [patient_id])
    if patient_id not in rows:
        raise refuse(ctx, UNMERGE, NotFound(NOT_FOUND), resource_id=patient_id)
    merged = rows[patient_id]
    if not in_capture(ctx, merged):
        ctx.trail.record(ctx.session, UNMERGE, audit.DENIED, resource_type=RESOURCE, resource_id=patient_id,
                         patient=ref(merged), outside_capture_scope=True)
        raise NotFound(NOT_FOUND)
    m = repo.active_merge_of(ctx.session, patient_id)
    try:
        if m is None or merged.merged_into is None:
            raise LinkageConflict("not_merged", "this record is not merged into another; there is nothing to unmerge")
        row = _restore(ctx, m, merged, body)
    except (LinkageConflict, InvalidInput) as exc:
        raise refuse(ctx, UNMERGE, exc, resource_id=patient_id, patient=ref(merged),
                     subjects=[patient_id] + ([m.survivor_id] if m is not None else [])) from None
    ctx.trail.record(ctx.session, UNMERGE, audit.SUCCESS, resource_type=RESOURCE, resource_id=patient_id,
                     patient=ref(merged), subjects=[patient_id, m.survivor_id],
                     detail={"merge_id": str(m.id), "doses_restored": len(m.moved_doses),
                             "later_doses_moved": len(row["unmerge_moved"])})
    return view(row)


def _restore(ctx: ServiceContext, m, merged, body: UnmergeRequest) -> dict:
    survivor = repo.patients(ctx.session, [m.survivor_id])[m.survivor_id]
    if survivor.merged_into is not None:
        raise LinkageConflict("survivor_merged", "the survivor has since been merged into another record; "
                                                 "unmerge that later merge first")
    now = datetime.now(UTC)
    later = sorted(set(body.move_dose_ids), key=str)
    if not repo.close_merge(ctx.session, m.id, m.version, ctx.principal.user_id, now, [str(d) for d in later]):
        raise LinkageConflict("not_merged", "this merge was undone by a concurrent request")
    if not repo.mark_unmerged(ctx.session, merged.id, survivor.id, now):
        raise LinkageConflict("not_merged", "this record is no longer merged into its survivor")
    if repo.restore_doses(ctx.session, m.moved_doses, survivor.id, merged.id, now) != len(m.moved_doses):
        raise LinkageConflict("doses_changed", "a moved dose is no longer on the survivor; nothing was changed")
    if repo.move_later_doses(ctx.session, later, survivor.id, merged.id, m.merged_at, now) != len(later):
        raise InvalidInput("each dose to move must have been recorded on the survivor after the merge",
                           field="move_dose_ids")
    if m.candidate_id is not None:
        repo.set_candidate_status(ctx.session, m.candidate_id, body.candidate_status, ctx.principal.user_id, now)
    report_queue.mark(ctx.session, survivor.id)
    report_queue.mark(ctx.session, merged.id)
    return {**m._asdict(), "version": m.version + 1, "unmerged_at": now, "unmerged_by": ctx.principal.user_id,
            "unmerge_moved": [str(d) for d in later]}


def list_merges(ctx: ServiceContext, cursor: str | None, limit: int):
    action = "linkage.merges"
    try:
        rows, nxt = repo.merges_in_scope(ctx.session, ctx.principal, cursor=cursor, limit=limit)
    except InvalidInput as exc:
        raise refuse(ctx, action, exc) from None
    ctx.trail.record(ctx.session, action, audit.SUCCESS, resource_type=RESOURCE,
                     subjects=[r.merged_id for r in rows] + [r.survivor_id for r in rows], detail={"count": len(rows)})
    return [view(r._asdict()) for r in rows], nxt
