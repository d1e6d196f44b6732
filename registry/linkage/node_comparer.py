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

The secret is never loaded here: nothing in this module calls linkage_secret or bloom_fields.encode.
A node that does not answer is reported unreachable and skipped; the others proceed. Each pull
and each push writes one audit event here (counts only), and the province node writes its own.
The transport (HTTPS with mutual TLS, api/nodes/transport.py) is injected: the domain knows
nothing of HTTP.
"""

from __future__ import annotations

import base64
import binascii
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
    unreachable: list[str] = field(default_factory=list)
    compared: int = 0
    found: int = 0
    pushed: dict[str, int] = field(default_factory=dict)


def _trail(run_id: uuid.UUID, node: str) -> AuditTrail:
    return AuditTrail(AccessContext(None, "HOPERAT", f"compare-{run_id.hex[:12]}", f"node:{node}"))


async def run(rt, comparer: Comparer) -> RunReport:
    report, run_id, changed = RunReport(), uuid.uuid4(), {}
    for province in sorted(comparer.peers):
        try:
            changed.update(await _pull(rt, comparer, province, run_id, report))
        except PeerUnavailable:
            report.unreachable.append(province)
    report.compared, report.found = _compare(rt, changed)
    for province in sorted(comparer.peers):
        if province in report.unreachable:
            continue
        try:
            report.pushed[province] = await _push(rt, comparer, province, run_id)
        except PeerUnavailable:
            report.unreachable.append(province)
    with rt.sessions.begin() as s:
        _trail(run_id, comparer.node).record(s, RUN, audit.SUCCESS, resource_type="LinkCandidate",
                                             detail={"pulled": report.pulled, "compared": report.compared,
                                                     "found": report.found, "pushed": report.pushed,
                                                     "unreachable": sorted(set(report.unreachable))})
    return report


def _page(answer: dict) -> tuple[list[dict], str | None, bool]:
    """The encodings of one answer, checked: anything else is a peer that did not answer usefully.
    An encoding of another model (a node not yet re-encoded: `clk-1`) is skipped, never compared."""
    try:
        rows = []
        for e in answer["encodings"]:
            clk = base64.b64decode(e["clk"], validate=True)
            if not isinstance(e["block"], str) or len(e["block"]) > 24:
                raise ValueError
            record_id = uuid.UUID(e["id"])
            if bloom_fields.unpack(clk) is not None:
                rows.append({"record_id": record_id, "block": e["block"], "clk": clk})
        nxt, more = answer["next"], answer["more"]
        if (nxt is not None and not isinstance(nxt, str)) or not isinstance(more, bool):
            raise ValueError
        return rows, nxt, more
    except (KeyError, TypeError, ValueError, binascii.Error):
        raise PeerUnavailable("malformed encodings page") from None


async def _pull(rt, comparer: Comparer, province: str, run_id: uuid.UUID,
                report: RunReport) -> dict[tuple[str, uuid.UUID], str]:
    """The records pulled from `province` in this run: (node, record id) -> block."""
    changed: dict[tuple[str, uuid.UUID], str] = {}
    with rt.sessions() as s:
        cursor = s.execute(select(CURSORS.c.cursor).where(CURSORS.c.node == province)).scalar()
    incremental, pages = cursor is not None, 0
    try:
        while True:
            rows, nxt, more = _page(await comparer.ask(province, exchange.ENCODINGS_PATH,
                                                       {"after": cursor, "limit": exchange.PAGE_MAX}))
            pages += 1
            now = datetime.now(UTC)
            with rt.sessions.begin() as s:  # the page and the cursor after it together
                ids = [r["record_id"] for r in rows]
                if ids:
                    s.execute(delete(ENCODINGS).where(ENCODINGS.c.node == province, ENCODINGS.c.record_id.in_(ids)))
                    s.execute(insert(ENCODINGS), [{**r, "node": province, "pulled_at": now} for r in rows])
                if nxt is not None:
                    s.execute(delete(CURSORS).where(CURSORS.c.node == province))
                    s.execute(insert(CURSORS), [{"node": province, "cursor": nxt, "pulled_at": now}])
            changed.update({(province, r["record_id"]): r["block"] for r in rows})
            cursor = nxt
            if not more or not rows:
                break
    finally:
        report.pulled[province] = len(changed)
        with rt.sessions.begin() as s:
            _trail(run_id, comparer.node).record(
                s, exchange.PULL, audit.SUCCESS if pages else audit.ERROR, resource_type="LinkEncoding",
                detail={"node": province, "count": len(changed), "pages": pages, "incremental": incremental})
    return changed


def _compare(rt, changed: dict[tuple[str, uuid.UUID], str]) -> tuple[int, int]:
    """Compare each changed record with the other nodes' records of its block sharing a candidate key."""
    blocks = set(changed.values())
    compared, found, now = 0, 0, datetime.now(UTC)
    for block in sorted(blocks):
        with rt.sessions() as s:
            members = [(r.record_id, r.node, enc) for r in s.execute(
                select(ENCODINGS.c.record_id, ENCODINGS.c.node, ENCODINGS.c.clk).where(ENCODINGS.c.block == block))
                if (enc := bloom_fields.unpack(r.clk)) is not None]
        rows = []
        model = bloom_fields.model_for_block(len(members))  # the block's prior: expected matches / pairs
        for a, b in sorted(bloom_fields.candidate_pairs(members)):  # different nodes sharing a candidate key
            if (members[a][1], members[a][0]) not in changed and (members[b][1], members[b][0]) not in changed:
                continue
            compared += 1
            sc = bloom_fields.score(members[a][2], members[b][2], model)
            if sc.grade is None:
                continue
            (lid, lnode, _), (rid, rnode, _) = sorted((members[a], members[b]), key=lambda m: (m[1], str(m[0])))
            rows.append({"left_node": lnode, "left_id": lid, "right_node": rnode, "right_id": rid,
                         "similarity": sc.probability, "grade": sc.grade, "levels": {k: int(v) for k, v in sc.levels.items()},
                         "left_stored": False, "right_stored": False,
                         "created_at": now})
        with rt.sessions.begin() as s:
            for row in rows:
                known = s.execute(select(PAIRS.c.left_id).where(
                    PAIRS.c.left_node == row["left_node"], PAIRS.c.left_id == row["left_id"],
                    PAIRS.c.right_node == row["right_node"], PAIRS.c.right_id == row["right_id"])).first()
                if known is None:
                    s.execute(insert(PAIRS), [row])
                    found += 1
    return compared, found


async def _push(rt, comparer: Comparer, province: str, run_id: uuid.UUID) -> int:
    """Send `province` the pairs it has not stored yet; returns how many were sent."""
    with rt.sessions() as s:
        left = s.execute(select(PAIRS).where(PAIRS.c.left_node == province, PAIRS.c.left_stored.is_(False))).all()
        right = s.execute(select(PAIRS).where(PAIRS.c.right_node == province, PAIRS.c.right_stored.is_(False))).all()
    todo = [(r, "left", {"local_id": str(r.left_id), "remote_node": r.right_node, "remote_id": str(r.right_id),
                         "similarity": r.similarity, "grade": r.grade, "levels": r.levels}) for r in left]
    todo += [(r, "right", {"local_id": str(r.right_id), "remote_node": r.left_node, "remote_id": str(r.left_id),
                           "similarity": r.similarity, "grade": r.grade, "levels": r.levels}) for r in right]
    sent, counts = 0, {"stored": 0, "already": 0, "unknown": 0}
    try:
        for i in range(0, len(todo), exchange.PAGE_MAX):
            chunk = todo[i:i + exchange.PAGE_MAX]
            answer = await comparer.ask(province, exchange.PAIRS_PATH, {"pairs": [body for _, _, body in chunk]})
            for k in counts:
                counts[k] += int(answer.get(k, 0)) if isinstance(answer.get(k, 0), int) else 0
            with rt.sessions.begin() as s:
                for row, side, _ in chunk:
                    s.execute(update(PAIRS).where(PAIRS.c.left_node == row.left_node, PAIRS.c.left_id == row.left_id,
                                                  PAIRS.c.right_node == row.right_node, PAIRS.c.right_id == row.right_id)
                              .values({f"{side}_stored": True}))
            sent += len(chunk)
    finally:
        if todo:
            with rt.sessions.begin() as s:
                _trail(run_id, comparer.node).record(
                    s, exchange.PUSH, audit.SUCCESS if sent == len(todo) else audit.ERROR, resource_type="LinkCandidate",
                    detail={"node": province, "sent": sent, "pending": len(todo) - sent, **counts})
    return sent
