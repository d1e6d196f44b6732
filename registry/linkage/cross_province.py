"""Linkage across provinces without plaintext (issue 13, item 7).

1. Each custodian province, in its own process with its keys, decrypts its records in memory and
   computes their Bloom-filter encodings (bloom.py, keyed by the national linkage secret, which
   only the provinces' encoders hold: linkage_secret.py):
   `nhr dedupe encode --province PK-SD`. Only the encodings (512-bit CLKs) and a coarse block
   (birth year and sex, already clear on the patient row) reach `link_encodings`.
2. The national layer, without the secret, compares encodings of *different* custodians within a block that share
   an LSH band (bloom.lsh_pairs: about 7% of the block's pairs on the bench population, the
   same pairs found at the thresholds), by Dice similarity, and proposes every pair at or above the `possible` similarity to the review queue
   with source `cross_province` (`nhr dedupe cross-province`): ids, the similarity and a level
   `{"bloom_dice": percent}` only. Both provinces' stewards see the pair in their queue; names
   are shown only to a steward with capture scope on a record, by the steward's views.

Each step writes one audit event by the system actor (counts only).
"""

from __future__ import annotations

import math
import uuid
from collections import defaultdict
from datetime import UTC, datetime

from sqlalchemy import delete, insert, select

from registry.linkage import bloom, dedupe, linkage_secret, records
from registry.linkage import repository as repo
from registry.linkage.match_models import LinkEncoding
from security.audit import trail as audit

ENC = LinkEncoding.__table__
MODEL_VERSION = "clk-1"


def _keys(rt) -> tuple[bytes, bytes]:
    """The encoder's HMAC keys; only encode_province calls this (compare must not: see linkage_secret.py)."""
    return bloom.derive_keys(linkage_secret.load(rt))


def encode_province(rt, province: str) -> int:
    """(Re)compute the encodings of a custodian's records; returns how many. An encoding that did not
    change keeps its row and time, so a node's incremental pull (node_exchange.py) sees only changes."""
    keys, after, n, changed = _keys(rt), None, 0, 0
    while True:
        with rt.sessions.begin() as s:
            rows = repo.province_rows(s, province, after=after, limit=dedupe.PAGE)
            if not rows:
                break
            now = datetime.now(UTC)
            ids = [r.id for r in rows]
            stored = {r.patient_id: (r.block, r.clk) for r in s.execute(
                select(ENC.c.patient_id, ENC.c.block, ENC.c.clk).where(ENC.c.patient_id.in_(ids)))}
            out, valid = [], set()
            for row in rows:
                rec = records.prepared_or_none(rt.cipher, row)
                if rec is None:
                    continue
                valid.add(row.id)
                enc = {"patient_id": row.id, "custodian": row.custodian, "block": f"{row.birth_date.year}:{row.sex}",
                       "clk": bloom.to_bytes(bloom.encode(keys, rec)), "created_at": now}
                if stored.get(row.id) != (enc["block"], enc["clk"]):  # an unchanged encoding keeps its time
                    out.append(enc)
            keep = (set(stored) & valid) - {o["patient_id"] for o in out}  # unchanged: left as they are
            gone = [i for i in ids if i not in keep]
            if gone:
                s.execute(delete(ENC).where(ENC.c.patient_id.in_(gone)))
            if out:
                s.execute(insert(ENC), out)
            n, changed = n + len(valid), changed + len(out)
        after = rows[-1].id
    with rt.sessions.begin() as s:
        dedupe._trail(uuid.uuid4()).record(s, "linkage.encode", audit.SUCCESS, resource_type="LinkCandidate",
                                           detail={"province": province, "encoded": n, "changed": changed})
    return n


def compare(rt) -> tuple[int, int]:
    """National layer: compare encodings across custodians; returns (pairs compared, new candidates).
    Needs no linkage secret (Dice and LSH bands on the stored filters): the national layer runs
    it with a keyring that has no `linkage-secret`."""
    with rt.sessions() as s:
        rows = s.execute(select(ENC.c.patient_id, ENC.c.custodian, ENC.c.block, ENC.c.clk)).all()
    blocks: dict[str, list] = defaultdict(list)
    for r in rows:
        blocks[r.block].append((r.patient_id, r.custodian, bloom.from_bytes(r.clk)))
    compared, proposed = 0, 0
    with rt.sessions.begin() as s:
        for members in blocks.values():
            for i, j in sorted(bloom.lsh_pairs(members)):  # pairs of different custodians sharing an LSH band
                (a, _, xa), (b, _, xb) = members[i], members[j]
                compared += 1
                d = bloom.dice(xa, xb)
                g = bloom.grade(d)
                if g is None:
                    continue
                weight = math.log2(d / (1 - d)) if d < 1 else 60.0
                if repo.propose(s, a, b, weight=weight, probability=d, grade=g, levels={"bloom_dice": round(d * 100)},
                                model_version=MODEL_VERSION, source="cross_province") == "new":
                    proposed += 1
        dedupe._trail(uuid.uuid4()).record(s, "linkage.cross_province", audit.SUCCESS, resource_type="LinkCandidate",
                                           detail={"compared": compared, "proposed": proposed})
    return compared, proposed
