"""Cross-province pairs found between provincial nodes, in the data steward's queue (issue 13
item 7, docs/linkage.md "Between provincial nodes").

The national comparer pushes each pair to both nodes (node_exchange.store_pairs); here a
steward sees the pairs whose *local* record is in the steward's capture scope, certain first,
then by similarity. The other record lives on another node: it is shown as "record held by
PK-SD" with its id and the similarity of the two encodings, never a name (this node holds none;
a steward with capture scope on the other record is a steward of that node, who sees the pair
there, from the other side). One `linkage.queue` event per page, the local records as subjects.
"""

from __future__ import annotations

import uuid
from datetime import datetime

from pydantic import BaseModel
from sqlalchemy import case, select

from registry import scoping
from registry.context import ServiceContext
from registry.linkage.node_link_models import RemoteLinkCandidate
from registry.patients.models import Patient
from security.audit import trail as audit

REMOTE = RemoteLinkCandidate.__table__
PATIENTS = Patient.__table__
QUEUE = "linkage.queue"
_RANK = case({"certain": 0, "probable": 1, "possible": 2}, value=REMOTE.c.grade, else_=3)


class RemoteQueueItem(BaseModel):
    id: uuid.UUID
    local_id: uuid.UUID
    held_by: str  # the node holding the other record
    remote_id: uuid.UUID
    grade: str
    similarity: float  # Dice coefficient of the two records' encodings
    status: str
    created_at: datetime


class RemoteQueuePage(BaseModel):
    items: list[RemoteQueueItem]


def remote_queue(ctx: ServiceContext, limit: int) -> RemoteQueuePage:
    q = (select(REMOTE).join(PATIENTS, PATIENTS.c.id == REMOTE.c.local_id)
         .where(REMOTE.c.status == "open", PATIENTS.c.merged_into.is_(None), scoping.capture_clause(ctx.principal, PATIENTS))
         .order_by(_RANK, REMOTE.c.similarity.desc(), REMOTE.c.id).limit(limit))
    rows = ctx.session.execute(q).all()
    items = [RemoteQueueItem(id=r.id, local_id=r.local_id, held_by=r.remote_node, remote_id=r.remote_id, grade=r.grade,
                             similarity=r.similarity, status=r.status, created_at=r.created_at) for r in rows]
    ctx.trail.record(ctx.session, QUEUE, audit.SUCCESS, resource_type="LinkCandidate", subjects=[r.local_id for r in rows],
                     detail={"count": len(items), "remote": True})
    return RemoteQueuePage(items=items)
