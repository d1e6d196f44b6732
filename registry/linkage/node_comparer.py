"""The national comparer of cross-province linkage between provincial nodes (issue 13 item 7,
docs/linkage.md "Between provincial nodes"): `nhr dedupe cross-province --nodes`.

It runs on a node of the federation that holds no patient and no linkage secret (its key
directory is made by `nhr init --without-linkage-secret`; its certificate, from the federation
CA, names it, e.g. `nhr-node:PK`, and every province node names it in `NHR_NODE_COMPARER`).
One run:
1. pull: asks each province node in the peers file for the encodings it (re)computed since the
   last pull (node_exchange.encodings_page, pages of up to 1,000, the node's cursor kept here in
   the same transaction as the page), into `link_national_encodings`;
2. compare: for each record pulled in this run, the encodings of *other* nodes in its block
   (birth year and sex) sharing a candidate key, scored from the field-level encodings
   (bloom_fields.score: the engine's levels and Fellegi-Sunter weights), as
   cross_province.compare does in one database; pairs with a grade are kept in
   `link_national_pairs` once, their `similarity` being the match probability;
3. push: sends each node the pairs it has not stored yet, as (its record, the other node and
   record, similarity, grade); a node that does not answer gets them on the next run.

Tombstones and withdrawals: a record the node no longer encodes (merged, not encodable) comes
as `{id, gone: true}`; its encoding is deleted here. Every pair found before that touches a
record pulled or removed in this run is re-scored: a changed score is pushed again (both sides
unstored), a pair no longer scoring a grade or missing a side is marked `withdrawn` and pushed
to both nodes as a withdrawal (the node takes it out of the stewards' queue).

The secret is never loaded here: nothing in this module calls linkage_secret or bloom_fields.encode.
A node that does not answer, or fails in any other way, is reported unreachable and skipped; the others proceed. Each pull
and each push writes one audit event here (counts only), and the province node writes its own.
The transport (HTTPS with mutual TLS, api/nodes/transport.py) is injected: the domain knows
nothing of HTTP.
"""

from __future__ import annotations

import base64
import binascii
import logging
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime

from sqlalchemy import delete, insert, select, update

from registry.linkage import bloom_fields
from registry.linkage import node_exchange as exchange
from registry.linkage.node_link_models import NationalCursor, NationalEncoding, NationalPair
from registry.nodes.federation import PeerUnavailable, Transport, load_peers
from registry.settings import Settings
from security.access.principal import AccessContext
from security.audit import trail as audit
from security.audit.trail import AuditTrail
from security.nodes.identity import NodeSigner

ENCODINGS = NationalEncoding.__table__
CURSORS = NationalCursor.__table__
PAIRS = NationalPair.__table__
RUN = "linkage.node_compare"
log = logging.getLogger("nhr.linkage.comparer")


@dataclass
class Comparer:
    node: str  # this comparer's node name, from its certificate
    peers: dict[str, str]  # province node -> base URL of its node listener
    signer: NodeSigner
    transport: Transport

    @classmethod
    def from_settings(cls, settings: Settings, transport: Transport) -> Comparer:
        node = settings.node
        if not (node.tls_cert and node.tls_key and node.tls_ca and node.peers_file):
            raise ValueError("the comparer needs NHR_NODE_TLS_CERT, _KEY, _CA and NHR_NODE_PEERS_FILE")
        if node.province is not None:
            raise ValueError("the comparer is not a province node: unset NHR_NODE_PROVINCE")
        signer = NodeSigner.load(node.tls_cert, node.tls_key)
        return cls(signer.province, load_peers(node.peers_file, signer.province), signer, transport)

    def caller(self) -> dict:
        return {"user_id": str(uuid.UUID(int=0)), "username": "linkage-comparer", "role": exchange.COMPARER_ROLE,
                "scope_level": "national", "scope_code": self.node, "province": None, "district": None,
                "purpose": "HOPERAT"}

    async def ask(self, province: str, path: str, body: dict) -> dict:
        body = {"assertion": self.signer.assert_caller(province, self.caller()), **body}
        return await self.transport.post(self.peers[province], path, body)


@dataclass
class RunReport:
    pulled: dict[str, int] = field(default_factory=dict)
    gone: dict[str, int] = field(default_factory=dict)  # tombstones pulled: encodings removed on the node
    unreachable: list[str] = field(default_factory=list)
    compared: int = 0
    found: int = 0
    rescored: int = 0  # pairs found before whose score changed (pushed again)
    withdrawn: int = 0  # pairs withdrawn: a side gone, or no longer scoring a grade
    pushed: dict[str, int] = field(default_factory=dict)


def _trail(run_id: uuid.UUID, node: str) -> AuditTrail:
    return AuditTrail(AccessContext(None, "HOPERAT", f"compare-{run_id.hex[:12]}", f"node:{node}"))


async def run(rt, comparer: Comparer) -> RunReport:
    """One pull, compare and push. A node that fails (unreachable, refusing, answering nonsense, or
    anything else going wrong with it) is reported unreachable and skipped; the others proceed."""
    report, run_id, changed, gone = RunReport(), uuid.uuid4(), {}, set()
    for province in sorted(comparer.peers):
        try:
            pulled, removed = await _pull(rt, comparer, province, run_id, report)
            changed.update(pulled)
            gone |= removed
        except Exception as exc:  # noqa: BLE001 (one node must not stop the others)
            _unreachable(report, province, "pull", exc)
    report.compared, report.found, report.rescored, report.withdrawn = _compare(rt, changed, gone)
    for province in sorted(comparer.peers):
        if province in report.unreachable:
            continue
        try:
            report.pushed[province] = await _push(rt, comparer, province, run_id)
        except Exception as exc:  # noqa: BLE001
            _unreachable(report, province, "push", exc)
    with rt.sessions.begin() as s:
        _trail(run_id, comparer.node).record(s, RUN, audit.SUCCESS, resource_type="LinkCandidate",
                                             detail={"pulled": report.pulled, "gone": report.gone,
                                                     "compared": report.compared, "found": report.found,
                                                     "rescored": report.rescored, "withdrawn": report.withdrawn,
                                                     "pushed": report.pushed,
                                                     "unreachable": sorted(set(report.unreachable))})
    return report


def _unreachable(report: RunReport, province: str, step: str, exc: Exception) -> None:
    report.unreachable.append(province)
    if not isinstance(exc, PeerUnavailable):  # by class only: a message could carry data
        log.warning("linkage comparer: %s of %s failed (%s); the other nodes proceed", step, province, type(exc).__name__)


def _page(answer: dict) -> tuple[list[dict], list[uuid.UUID], str | None, bool]:
    """The encodings and tombstones of one answer, checked: anything else is a peer that did not
    answer usefully. An encoding of another model (a node not yet re-encoded: `clk-1`) is skipped,
    never compared (and any encoding of that record held here is dropped: it is stale)."""
    try:
        rows, gone = [], []
        for e in answer["encodings"]:
            record_id = uuid.UUID(e["id"])
            if e.get("gone") is True:
                gone.append(record_id)
                continue
            clk = base64.b64decode(e["clk"], validate=True)
            if not isinstance(e["block"], str) or len(e["block"]) > 24:
                raise ValueError
            if bloom_fields.unpack(clk) is not None:
                rows.append({"record_id": record_id, "block": e["block"], "clk": clk})
            else:
                gone.append(record_id)
        nxt, more = answer["next"], answer["more"]
        if (nxt is not None and not isinstance(nxt, str)) or not isinstance(more, bool):
            raise ValueError
        return rows, gone, nxt, more
    except (KeyError, TypeError, ValueError, AttributeError, binascii.Error):
        raise PeerUnavailable("malformed encodings page") from None


async def _pull(rt, comparer: Comparer, province: str, run_id: uuid.UUID,
                report: RunReport) -> tuple[dict[tuple[str, uuid.UUID], str], set[tuple[str, uuid.UUID]]]:
    """The records pulled from `province` in this run: (node, record id) -> block, and the (node,
    record id) whose encoding the node removed (their encodings are deleted here)."""
    changed: dict[tuple[str, uuid.UUID], str] = {}
    gone: set[tuple[str, uuid.UUID]] = set()
    with rt.sessions() as s:
        cursor = s.execute(select(CURSORS.c.cursor).where(CURSORS.c.node == province)).scalar()
    incremental, pages = cursor is not None, 0
    try:
        while True:
            rows, removed, nxt, more = _page(await comparer.ask(province, exchange.ENCODINGS_PATH,
                                                                {"after": cursor, "limit": exchange.PAGE_MAX}))
            pages += 1
            now = datetime.now(UTC)
            with rt.sessions.begin() as s:  # the page and the cursor after it together
                ids = [r["record_id"] for r in rows] + removed
                if ids:
                    s.execute(delete(ENCODINGS).where(ENCODINGS.c.node == province, ENCODINGS.c.record_id.in_(ids)))
                if rows:
                    s.execute(insert(ENCODINGS), [{**r, "node": province, "pulled_at": now} for r in rows])
                if nxt is not None:
                    s.execute(delete(CURSORS).where(CURSORS.c.node == province))
                    s.execute(insert(CURSORS), [{"node": province, "cursor": nxt, "pulled_at": now}])
            for r in rows:
                changed[(province, r["record_id"])] = r["block"]
                gone.discard((province, r["record_id"]))
            for rid in removed:
                changed.pop((province, rid), None)
                gone.add((province, rid))
            cursor = nxt
            if not more or not (rows or removed):
                break
    finally:
        report.pulled[province], report.gone[province] = len(changed), len(gone)
        with rt.sessions.begin() as s:
            _trail(run_id, comparer.node).record(
                s, exchange.PULL, audit.SUCCESS if pages else audit.ERROR, resource_type="LinkEncoding",
                detail={"node": province, "count": len(changed), "gone": len(gone), "pages": pages,
                        "incremental": incremental})
    return changed, gone


def _key(row) -> tuple[str, uuid.UUID, str, uuid.UUID]:
    return row["left_node"], row["left_id"], row["right_node"], row["right_id"]


def _touching(s, records: set[tuple[str, uuid.UUID]]) -> list:
    """The pairs found before that have one of `records` on a side."""
    by_node: dict[str, list[uuid.UUID]] = {}
    for node, rid in records:
        by_node.setdefault(node, []).append(rid)
    out = {}
    for node, ids in by_node.items():
        for i in range(0, len(ids), 500):
            chunk = ids[i:i + 500]
            for side in ("left", "right"):
                for r in s.execute(select(PAIRS).where(PAIRS.c[f"{side}_node"] == node, PAIRS.c[f"{side}_id"].in_(chunk))):
                    out[_key(r._mapping)] = r
    return list(out.values())


def _compare(rt, changed: dict[tuple[str, uuid.UUID], str],
             gone: set[tuple[str, uuid.UUID]]) -> tuple[int, int, int, int]:
    """Compare each changed record with the other nodes' records of its block sharing a candidate
    key; then re-score or withdraw the pairs found before that touch a changed or removed record.
    Returns (compared, new pairs, re-scored pairs, withdrawn pairs)."""
    blocks = set(changed.values())
    compared, now, scored = 0, datetime.now(UTC), {}
    for block in sorted(blocks):
        with rt.sessions() as s:
            members = [(r.record_id, r.node, enc) for r in s.execute(
                select(ENCODINGS.c.record_id, ENCODINGS.c.node, ENCODINGS.c.clk).where(ENCODINGS.c.block == block))
                if (enc := bloom_fields.unpack(r.clk)) is not None]
        model = bloom_fields.model_for_block(len(members))  # the block's prior: expected matches / pairs
        for a, b in sorted(bloom_fields.candidate_pairs(members)):  # different nodes sharing a candidate key
            if (members[a][1], members[a][0]) not in changed and (members[b][1], members[b][0]) not in changed:
                continue
            compared += 1
            sc = bloom_fields.score(members[a][2], members[b][2], model)
            if sc.grade is None:
                continue
            (lid, lnode, _), (rid, rnode, _) = sorted((members[a], members[b]), key=lambda m: (m[1], str(m[0])))
            row = {"left_node": lnode, "left_id": lid, "right_node": rnode, "right_id": rid,
                   "similarity": sc.probability, "grade": sc.grade, "levels": {k: int(v) for k, v in sc.levels.items()}}
            scored[_key(row)] = row
    found = rescored = withdrawn = 0
    with rt.sessions.begin() as s:
        before = {_key(r._mapping): r for r in _touching(s, set(changed) | gone)}
        unpushed = {"left_stored": False, "right_stored": False}
        for key, row in scored.items():
            old = before.get(key)
            if old is None:
                s.execute(insert(PAIRS), [{**row, **unpushed, "withdrawn": False, "created_at": now}])
                found += 1
            elif old.withdrawn or (old.similarity, old.grade, old.levels) != (row["similarity"], row["grade"], row["levels"]):
                s.execute(update(PAIRS).where(*_where(key)).values(similarity=row["similarity"], grade=row["grade"],
                                                                    levels=row["levels"], withdrawn=False, **unpushed))
                rescored += 1
        for key, old in before.items():
            if key not in scored and not old.withdrawn:  # a side removed, or the pair no longer scores a grade
                s.execute(update(PAIRS).where(*_where(key)).values(withdrawn=True, **unpushed))
                withdrawn += 1
    return compared, found, rescored, withdrawn


def _where(key: tuple[str, uuid.UUID, str, uuid.UUID]) -> tuple:
    return (PAIRS.c.left_node == key[0], PAIRS.c.left_id == key[1], PAIRS.c.right_node == key[2], PAIRS.c.right_id == key[3])


async def _push(rt, comparer: Comparer, province: str, run_id: uuid.UUID) -> int:
    """Send `province` the pairs and withdrawals it has not stored yet; returns how many were sent."""
    with rt.sessions() as s:
        left = s.execute(select(PAIRS).where(PAIRS.c.left_node == province, PAIRS.c.left_stored.is_(False))).all()
        right = s.execute(select(PAIRS).where(PAIRS.c.right_node == province, PAIRS.c.right_stored.is_(False))).all()
    todo = [(r, "left", {"local_id": str(r.left_id), "remote_node": r.right_node, "remote_id": str(r.right_id)}) for r in left]
    todo += [(r, "right", {"local_id": str(r.right_id), "remote_node": r.left_node, "remote_id": str(r.left_id)}) for r in right]
    sent, counts = 0, {"stored": 0, "updated": 0, "already": 0, "unknown": 0, "withdrawn": 0}
    try:
        for i in range(0, len(todo), exchange.PAGE_MAX):
            chunk = todo[i:i + exchange.PAGE_MAX]
            pairs = [{**body, "similarity": r.similarity, "grade": r.grade, "levels": r.levels}
                     for r, _, body in chunk if not r.withdrawn]
            answer = await comparer.ask(province, exchange.PAIRS_PATH,
                                        {"pairs": pairs, "withdrawn": [body for r, _, body in chunk if r.withdrawn]})
            for k in counts:
                counts[k] += int(answer.get(k, 0)) if isinstance(answer.get(k, 0), int) else 0
            with rt.sessions.begin() as s:
                for row, side, _ in chunk:
                    s.execute(update(PAIRS).where(*_where(_key(row._mapping))).values({f"{side}_stored": True}))
            sent += len(chunk)
    finally:
        if todo:
            with rt.sessions.begin() as s:
                _trail(run_id, comparer.node).record(
                    s, exchange.PUSH, audit.SUCCESS if sent == len(todo) else audit.ERROR, resource_type="LinkCandidate",
                    detail={"node": province, "sent": sent, "pending": len(todo) - sent, **counts})
    return sent
