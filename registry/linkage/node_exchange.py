"""A province node's side of cross-province linkage between provincial nodes (issue 13 item 7,
docs/linkage.md "Between provincial nodes").

The province node encodes its own records (`nhr dedupe encode`, cross_province.encode_province,
with the linkage secret). The national comparer, a node of the federation whose certificate
names the node `NHR_NODE_COMPARER` and which holds no linkage secret, pulls those encodings and
pushes back the candidate pairs it found, both over the node-to-node listener (api/nodes/app.py).

Invariants:
- Only the comparer is answered: the asking node must be `NHR_NODE_COMPARER` and speak as the
  `linkage_comparer` (remote.py: anything else, a province node included, is refused 403 and
  audited as denied). A node with no comparer configured serves its encodings to nobody.
- An encodings page carries record ids, the coarse block (birth year and sex) and the 512-bit
  encoding; a pushed pair carries ids, the node holding the other record, the match probability, the levels and a
  grade. No name, identifier or date in either, and nothing of a pair is taken on trust: a local
  id that is not one of this node's records is skipped and counted.
- Every pull and push writes one audit event here (`linkage.encodings`, `linkage.pairs`),
  counts only, naming the calling node (the comparer writes its own).
- Incremental: encodings are paged by (created_at, patient id), the time a record was last
  (re)encoded; the comparer keeps the cursor and asks only for what changed since.
"""

from __future__ import annotations

import base64
import uuid
from datetime import UTC, datetime

from sqlalchemy import and_, insert, or_, select, tuple_

from registry.context import ServiceContext
from registry.errors import Forbidden, InvalidInput
from registry.linkage.match_models import LinkEncoding
from registry.linkage.models import GRADES
from registry.linkage.node_link_models import RemoteLinkCandidate
from registry.nodes import remote
from registry.patients.models import Patient
from security.audit import trail as audit

ENCODINGS_PATH = "/node/v1/linkage/encodings"
PAIRS_PATH = "/node/v1/linkage/pairs"
PULL, PUSH = "linkage.encodings", "linkage.pairs"
COMPARER_ROLE = "linkage_comparer"
PAGE_MAX = 1000
ENC = LinkEncoding.__table__
REMOTE = RemoteLinkCandidate.__table__
PATIENTS = Patient.__table__


def check_comparer(claims: dict, comparer: str | None) -> None:
    """Raises Forbidden unless the asking node is this node's configured comparer, speaking as such."""
    if comparer is None or claims["node"] != comparer:
        raise Forbidden("only the national linkage comparer may exchange linkage encodings and pairs")
    if claims["caller"].get("role") != COMPARER_ROLE:
        raise Forbidden("the comparer's caller must be the linkage comparer")


def encode_cursor(created_at: datetime, patient_id: uuid.UUID) -> str:
    return f"{created_at.astimezone(UTC).isoformat()}|{patient_id}"


def decode_cursor(cursor: str) -> tuple[datetime, uuid.UUID]:
    try:
        at, pid = cursor.split("|")
        moment = datetime.fromisoformat(at)
        if moment.tzinfo is None:
            raise ValueError
        return moment, uuid.UUID(pid)
    except ValueError:
        raise InvalidInput("the cursor is not one this node issued", field="after") from None


def encodings_page(ctx: ServiceContext, claims: dict, province: str, after: str | None, limit: int) -> dict:
    """This node's encodings (re)computed after `after`, oldest first: {encodings, next, more}."""
    q = (select(ENC.c.patient_id, ENC.c.block, ENC.c.clk, ENC.c.created_at).where(ENC.c.custodian == province)
         .order_by(ENC.c.created_at, ENC.c.patient_id).limit(min(limit, PAGE_MAX)))
    if after is not None:
        try:
            at, pid = decode_cursor(after)
        except InvalidInput:
            ctx.trail.record(ctx.session, PULL, audit.INVALID, resource_type="LinkEncoding",
                             detail={**remote.detail(claims), "field": "after"})
            raise
        q = q.where(or_(ENC.c.created_at > at, and_(ENC.c.created_at == at, ENC.c.patient_id > pid)))
    rows = ctx.session.execute(q).all()
    ctx.trail.record(ctx.session, PULL, audit.SUCCESS, resource_type="LinkEncoding",
                     detail={**remote.detail(claims), "count": len(rows), "incremental": after is not None})
    return {"encodings": [{"id": str(r.patient_id), "block": r.block, "clk": base64.b64encode(r.clk).decode()} for r in rows],
            "next": encode_cursor(rows[-1].created_at, rows[-1].patient_id) if rows else after,
            "more": len(rows) == min(limit, PAGE_MAX)}


def store_pairs(ctx: ServiceContext, claims: dict, province: str, pairs: list[dict]) -> dict:
    """Keep each pushed pair as (local record, remote node + record, similarity, grade), once;
    returns counts: stored (new), already (kept before), unknown (not a record of this node)."""
    for n, p in enumerate(pairs):
        bad = ("remote_node", "names this node") if p["remote_node"] == province else \
              ("grade", "is not a grade") if p["grade"] not in GRADES else None
        if bad:
            ctx.trail.record(ctx.session, PUSH, audit.INVALID, resource_type="LinkCandidate",
                             detail={**remote.detail(claims), "field": f"pairs/{n}/{bad[0]}"})
            raise InvalidInput(f"a pair's {bad[0]} {bad[1]}", field=f"pairs/{n}/{bad[0]}")
    local_ids = {p["local_id"] for p in pairs}
    ours = set(ctx.session.execute(select(PATIENTS.c.id).where(PATIENTS.c.id.in_(local_ids),
                                                               PATIENTS.c.custodian == province)).scalars())
    keys = {(p["local_id"], p["remote_node"], p["remote_id"]) for p in pairs if p["local_id"] in ours}
    kept = set()
    if keys:
        kept = {tuple(r) for r in ctx.session.execute(
            select(REMOTE.c.local_id, REMOTE.c.remote_node, REMOTE.c.remote_id)
            .where(tuple_(REMOTE.c.local_id, REMOTE.c.remote_node, REMOTE.c.remote_id).in_(list(keys))))}
    now, new, seen = datetime.now(UTC), [], set()
    for p in pairs:
        key = (p["local_id"], p["remote_node"], p["remote_id"])
        if key not in keys or key in kept or key in seen:
            continue
        seen.add(key)
        new.append({"id": uuid.uuid4(), "local_id": key[0], "remote_node": key[1], "remote_id": key[2],
                    "similarity": p["similarity"], "grade": p["grade"], "levels": {k: int(v) for k, v in p["levels"].items()},
                    "status": "open", "version": 1, "created_at": now})
    if new:
        ctx.session.execute(insert(REMOTE), new)
    counts = {"received": len(pairs), "stored": len(new), "already": len(keys) - len(new),
              "unknown": sum(1 for p in pairs if p["local_id"] not in ours)}
    ctx.trail.record(ctx.session, PUSH, audit.SUCCESS, resource_type="LinkCandidate", detail={**remote.detail(claims), **counts})
    return counts
