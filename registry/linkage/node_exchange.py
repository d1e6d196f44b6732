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
- Incremental: the encodings feed (node_feed.py) is paged by its position, given under a lock
  held to the commit, so concurrent encoders cannot commit behind a pull's cursor; records whose
  encoding was removed appear there as tombstones. The comparer keeps the cursor and asks only
  for what changed since.
- Pairs are re-scored and withdrawn by the comparer: a pair pushed again with another score
  updates the stored one (a withdrawn one reopens); a withdrawal sets it `withdrawn`, out of the
  stewards' queue; the decisions taken on it stay in the audit trail.
"""

from __future__ import annotations

import base64
import uuid
from datetime import UTC, datetime

from sqlalchemy import insert, select, tuple_, update

from registry.context import ServiceContext
from registry.errors import Forbidden, InvalidInput
from registry.linkage import node_feed
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


def encodings_page(ctx: ServiceContext, claims: dict, province: str, after: str | None, limit: int) -> dict:
    """This node's feed after `after` (node_feed.py), in feed order: {encodings, next, more}; an
    encoding is {id, block, clk}, a removed one (merged, no longer encodable) {id, gone: true}."""
    position = None
    if after is not None:
        try:
            position = node_feed.decode_cursor(after)
        except InvalidInput:
            ctx.trail.record(ctx.session, PULL, audit.INVALID, resource_type="LinkEncoding",
                             detail={**remote.detail(claims), "field": "after"})
            raise
    rows = node_feed.page(ctx.session, province, position, min(limit, PAGE_MAX))
    gone = sum(1 for r in rows if r.clk is None)
    ctx.trail.record(ctx.session, PULL, audit.SUCCESS, resource_type="LinkEncoding",
                     detail={**remote.detail(claims), "count": len(rows) - gone, "gone": gone, "incremental": after is not None})
    return {"encodings": [{"id": str(r.id), "block": r.block, "clk": base64.b64encode(r.clk).decode()} if r.clk is not None
                          else {"id": str(r.id), "gone": True} for r in rows],
            "next": node_feed.encode_cursor(rows[-1].seq, rows[-1].id) if rows else after,
            "more": len(rows) == min(limit, PAGE_MAX)}


def store_pairs(ctx: ServiceContext, claims: dict, province: str, pairs: list[dict],
                withdrawn: list[dict] | None = None) -> dict:
    """Keep each pushed pair as (local record, remote node + record, similarity, grade), once, and
    withdraw the `withdrawn` ones (local_id, remote_node, remote_id); returns counts: stored (new),
    updated (kept before, now re-scored; a withdrawn one reopened), already (kept, unchanged),
    unknown (not a record of this node), withdrawn (set withdrawn here)."""
    withdrawn = withdrawn or []
    for n, p in enumerate(pairs):
        bad = ("remote_node", "names this node") if p["remote_node"] == province else \
              ("grade", "is not a grade") if p["grade"] not in GRADES else None
        if bad:
            ctx.trail.record(ctx.session, PUSH, audit.INVALID, resource_type="LinkCandidate",
                             detail={**remote.detail(claims), "field": f"pairs/{n}/{bad[0]}"})
            raise InvalidInput(f"a pair's {bad[0]} {bad[1]}", field=f"pairs/{n}/{bad[0]}")
    local_ids = {p["local_id"] for p in pairs} | {w["local_id"] for w in withdrawn}
    ours = set(ctx.session.execute(select(PATIENTS.c.id).where(PATIENTS.c.id.in_(local_ids),
                                                               PATIENTS.c.custodian == province)).scalars()) if local_ids else set()
    key = lambda p: (p["local_id"], p["remote_node"], p["remote_id"])  # noqa: E731
    keys = {key(p) for p in pairs if p["local_id"] in ours} | {key(w) for w in withdrawn if w["local_id"] in ours}
    kept = {}
    if keys:
        kept = {(r.local_id, r.remote_node, r.remote_id): r for r in ctx.session.execute(
            select(REMOTE.c.id, REMOTE.c.local_id, REMOTE.c.remote_node, REMOTE.c.remote_id, REMOTE.c.similarity,
                   REMOTE.c.grade, REMOTE.c.levels, REMOTE.c.status)
            .where(tuple_(REMOTE.c.local_id, REMOTE.c.remote_node, REMOTE.c.remote_id).in_(list(keys))))}
    now, new, seen, updated, already, gone = datetime.now(UTC), [], set(), 0, 0, 0
    for p in pairs:
        k = key(p)
        if p["local_id"] not in ours or k in seen:
            continue
        seen.add(k)
        levels = {f: int(v) for f, v in p["levels"].items()}
        row = kept.get(k)
        if row is None:
            new.append({"id": uuid.uuid4(), "local_id": k[0], "remote_node": k[1], "remote_id": k[2],
                        "similarity": p["similarity"], "grade": p["grade"], "levels": levels,
                        "status": "open", "version": 1, "created_at": now})
        elif (row.similarity, row.grade, row.levels) != (p["similarity"], p["grade"], levels) or row.status == "withdrawn":  # re-scored (its decision, if any, stands), or found again
            ctx.session.execute(update(REMOTE).where(REMOTE.c.id == row.id).values(
                similarity=p["similarity"], grade=p["grade"], levels=levels, version=REMOTE.c.version + 1,
                status="open" if row.status == "withdrawn" else row.status))
            updated += 1
        else:
            already += 1
    if new:
        ctx.session.execute(insert(REMOTE), new)
    for w in withdrawn:
        row = kept.get(key(w))
        if row is not None and row.status != "withdrawn" and key(w) not in seen:
            seen.add(key(w))
            ctx.session.execute(update(REMOTE).where(REMOTE.c.id == row.id).values(status="withdrawn",
                                                                                   version=REMOTE.c.version + 1))
            gone += 1
    counts = {"received": len(pairs), "stored": len(new), "updated": updated, "already": already,
              "unknown": sum(1 for p in pairs if p["local_id"] not in ours), "withdrawn": gone}
    ctx.trail.record(ctx.session, PUSH, audit.SUCCESS, resource_type="LinkCandidate", detail={**remote.detail(claims), **counts})
    return counts
