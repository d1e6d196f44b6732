"""Cross-province pairs found between provincial nodes, in the data steward's queue (issue 13
item 7, docs/linkage.md "Between provincial nodes").

The national comparer pushes each pair to both nodes (node_exchange.store_pairs); here a
steward sees the pairs whose *local* record is in the steward's capture scope, certain first,
then by similarity. The other record lives on another node: it is shown as "record held by
PK-SD" with its id and the similarity of the two encodings, never a name (this node holds none;
a steward with capture scope on the other record is a steward of that node, who sees the pair
there, from the other side). One `linkage.queue` event per page, the local records as subjects.

A steward decides such a pair *not the same* or *unsure* (If-Match, the item's version, as for a
local pair: one of two concurrent decisions wins, the other gets 409 `already_decided`); one
`linkage.decide` event, with `remote: true`. *Same child* is not offered: a merge would move
custody between nodes, which is not built. The decision is this node's; the other node's steward
decides their side of the pair.

A pair the comparer withdraws (one record merged, erased or changed: node_exchange.store_pairs)
has status `withdrawn` and leaves the queue; the decisions taken on it stay in the audit trail.
"""

from __future__ import annotations

import uuid
from datetime import datetime

from typing import Literal

from pydantic import BaseModel, ConfigDict
from sqlalchemy import case, select, update

from registry import scoping
from registry.context import ServiceContext
from registry.errors import NotFound, PreconditionFailed, PreconditionRequired
from registry.linkage.merge import LinkageConflict, refuse
from registry.linkage.node_link_models import RemoteLinkCandidate
from registry.patients.models import Patient
from registry.patients.service import parse_if_match
from security.audit import trail as audit

REMOTE = RemoteLinkCandidate.__table__
PATIENTS = Patient.__table__
QUEUE, DECIDE = "linkage.queue", "linkage.decide"
QUEUED = ("open", "unsure")
_RANK = case({"certain": 0, "probable": 1, "possible": 2}, value=REMOTE.c.grade, else_=3)


class RemoteQueueItem(BaseModel):
    id: uuid.UUID
    version: int
    local_id: uuid.UUID
    held_by: str  # the node holding the other record
    remote_id: uuid.UUID
    grade: str
    similarity: float  # Dice coefficient of the two records' encodings
    status: str
    created_at: datetime


class RemoteQueuePage(BaseModel):
    items: list[RemoteQueueItem]


class RemoteDecision(BaseModel):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [{"decision": "not_same"},
                                                                              {"decision": "unsure"}]})
    decision: Literal["not_same", "unsure"]


class RemoteDecisionResult(BaseModel):
    candidate_id: uuid.UUID
    status: str
    version: int


def remote_queue(ctx: ServiceContext, limit: int) -> RemoteQueuePage:
    q = (select(REMOTE).join(PATIENTS, PATIENTS.c.id == REMOTE.c.local_id)
         .where(REMOTE.c.status.in_(QUEUED), PATIENTS.c.merged_into.is_(None), scoping.capture_clause(ctx.principal, PATIENTS))
         .order_by(_RANK, REMOTE.c.similarity.desc(), REMOTE.c.id).limit(limit))
    rows = ctx.session.execute(q).all()
    items = [RemoteQueueItem(id=r.id, version=r.version, local_id=r.local_id, held_by=r.remote_node, remote_id=r.remote_id, grade=r.grade,
                             similarity=r.similarity, status=r.status, created_at=r.created_at) for r in rows]
    ctx.trail.record(ctx.session, QUEUE, audit.SUCCESS, resource_type="LinkCandidate", subjects=[r.local_id for r in rows],
                     detail={"count": len(items), "remote": True})
    return RemoteQueuePage(items=items)


def decide(ctx: ServiceContext, candidate_id: uuid.UUID, if_match: str | None, body: RemoteDecision) -> RemoteDecisionResult:
    row = ctx.session.execute(select(REMOTE.c.local_id, REMOTE.c.status, PATIENTS.c.id.label("pid"))
                              .join(PATIENTS, PATIENTS.c.id == REMOTE.c.local_id)
                              .where(REMOTE.c.id == candidate_id, scoping.capture_clause(ctx.principal, PATIENTS))).first()
    if row is None:  # unknown, or its local record outside the steward's scope: the same answer
        ctx.trail.record(ctx.session, DECIDE, audit.NOT_FOUND, resource_type="LinkCandidate", resource_id=candidate_id,
                         detail={"remote": True})
        raise NotFound("candidate pair not found")
    event = {"resource_id": candidate_id, "subjects": [row.local_id], "detail": {"remote": True}}
    try:
        expected = parse_if_match(if_match)
    except (PreconditionRequired, PreconditionFailed) as exc:
        raise refuse(ctx, DECIDE, exc, **event) from None
    done = ctx.session.execute(update(REMOTE).where(REMOTE.c.id == candidate_id, REMOTE.c.version == expected,
                                                    REMOTE.c.status.in_(QUEUED))
                               .values(status=body.decision, version=REMOTE.c.version + 1)).rowcount
    if not done:
        raise refuse(ctx, DECIDE, LinkageConflict("already_decided", "the pair was decided or changed since you read it; "
                                                                     "reload the queue"), **event)
    ctx.trail.record(ctx.session, DECIDE, audit.SUCCESS, resource_type="LinkCandidate", resource_id=candidate_id,
                     subjects=[row.local_id], detail={"remote": True, "decision": body.decision})
    return RemoteDecisionResult(candidate_id=candidate_id, status=body.decision, version=expected + 1)
