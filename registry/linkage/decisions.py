"""A data steward's decision on a candidate pair (issue 13): *same child* (merge), *not the
same* (remembered: the matcher never proposes the pair again), or *unsure* (stays queued,
marked). One `linkage.decide` event per call, on success and on refusal.

The optional note is encrypted under the deciding steward's province's keys, bound to the
candidate row (`link_candidates.note_ct`); the audit event says only whether there is one.

Concurrency: the decision names the pair's version (If-Match, the ETag of the pair view or
queue item); the pair changes only if it is still at that version and still queued, in the same
statement. Two stewards deciding at once: one wins, the other gets 409 `already_decided`; a
merge refused after the pair was updated raises, and the transaction rolls back whole.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

from registry.context import ServiceContext
from registry.errors import InvalidInput, NotFound, PreconditionFailed, PreconditionRequired
from registry.linkage import steward_repository as repo
from registry.linkage.decision_notes import encrypt_note
from registry.linkage.merge import LinkageConflict, apply_merge, ref, refuse, view
from registry.linkage.queue import pair_in_reach, suggested_survivor
from registry.linkage.steward_schemas import Decision, DecisionResult
from registry.patients.service import parse_if_match
from security.audit import trail as audit

DECIDE = "linkage.decide"
STATUS = {"same": "merged", "not_same": "not_same", "unsure": "unsure"}


def decide(ctx: ServiceContext, candidate_id: uuid.UUID, if_match: str | None, body: Decision) -> DecisionResult:
    cand, rows, inside = pair_in_reach(ctx, candidate_id, DECIDE)
    pair = [cand.left_id, cand.right_id]
    event = {"resource_id": candidate_id, "subjects": pair}
    try:
        expected = parse_if_match(if_match)
    except (PreconditionRequired, PreconditionFailed) as exc:
        raise refuse(ctx, DECIDE, exc, **event) from None
    survivor = merged = None
    if body.decision == "same":
        survivor_id = body.survivor_id or suggested_survivor(ctx, rows)
        if survivor_id not in rows:
            raise refuse(ctx, DECIDE, InvalidInput("must be one of the pair's two records", field="survivor_id"), **event)
        survivor, merged = rows[survivor_id], rows[pair[1] if survivor_id == pair[0] else pair[0]]
        if not inside[merged.id]:  # a steward folds records of its own scope only
            ctx.trail.record(ctx.session, DECIDE, audit.DENIED, resource_type="LinkCandidate", patient=ref(merged),
                             outside_capture_scope=True, detail={"reason": "merged record outside scope"}, **event)
            raise NotFound("the record to be replaced is outside your scope; choose it as the survivor, or leave the "
                           "pair to a steward of its jurisdiction")
        event["patient"] = ref(merged)
    now = datetime.now(UTC)
    note = encrypt_note(ctx, candidate_id, body.note)
    try:
        if not repo.decide(ctx.session, candidate_id, expected, STATUS[body.decision], ctx.principal.user_id, now,
                           note=note):
            raise LinkageConflict("already_decided", "the pair was decided or changed since you read it; "
                                                     "reload the queue")
        merge_row = apply_merge(ctx, survivor, merged, candidate_id) if body.decision == "same" else None
    except LinkageConflict as exc:
        raise refuse(ctx, DECIDE, exc, **event) from None
    detail = {"decision": body.decision, "note": note is not None}  # whether there is one, never its text
    if merge_row is not None:
        detail.update(merge_id=str(merge_row["id"]), doses_moved=len(merge_row["moved_doses"]))
    ctx.trail.record(ctx.session, DECIDE, audit.SUCCESS, resource_type="LinkCandidate", detail=detail, **event)
    return DecisionResult(candidate_id=candidate_id, status=STATUS[body.decision], version=expected + 1,
                          merge=view(merge_row) if merge_row is not None else None)


