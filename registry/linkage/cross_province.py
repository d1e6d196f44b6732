"""Linkage across provinces without plaintext (issue 13, item 7).

1. Each custodian province, in its own process with its keys, decrypts its records in memory and
   computes their Bloom-filter encodings (bloom.py, keyed by the national linkage secret, which
   only the provinces' encoders hold: linkage_secret.py):
   `nhr dedupe encode --province PK-SD`. Only the encodings and a coarse block (birth year and
   sex, already clear on the patient row) reach `link_encodings`. Since model `fbf-1` the
   encoding is field-level (bloom_fields.py: a Bloom filter a name, birth-date tokens, salted
   with the block), packed in one blob a record; `clk-1` blobs (record-level CLKs, bloom.encode)
   are skipped by `compare` until the province re-encodes.
2. The national layer, without the secret, compares encodings of *different* custodians within a block that share
   a candidate key (bloom_fields.candidate_pairs: a birth-date token or two exactly agreeing
   name filters, about 3% of the block's pairs on the bench population, the same pairs found
   at the thresholds), scores them as the engine does (per-field levels from the encodings,
   Fellegi-Sunter weights and thresholds of the configured model: bloom_fields.score), and
   proposes every pair at or above `possible` to the review queue with source `cross_province`
   (`nhr dedupe cross-province`): ids, the weight and the engine's comparison levels of the
   encoded fields only (so stewards read the engine's reasons). Both provinces' stewards see the pair in their queue; names
   are shown only to a steward with capture scope on a record, by the steward's views.

Each step writes one audit event by the system actor (counts only).
"""

from __future__ import annotations

import uuid
from collections import defaultdict
from datetime import UTC, datetime

from sqlalchemy import select

from registry.linkage import bloom, bloom_fields, dedupe, linkage_secret, node_feed, records
from registry.linkage import repository as repo
from registry.linkage.match_models import LinkEncoding
from security.audit import trail as audit

ENC = LinkEncoding.__table__
MODEL_VERSION = bloom_fields.MODEL.version  # "fbf-1"; was "clk-1" (record-level CLKs)


def _keys(rt) -> tuple[bytes, bytes]:
    """The encoder's HMAC keys; only encode_province calls this (compare must not: see linkage_secret.py)."""
    return bloom.derive_keys(linkage_secret.load(rt))


def encode_province(rt, province: str) -> int:
    """(Re)compute the encodings of a custodian's records; returns how many. An encoding that did not
    change keeps its row and time, so a node's incremental pull (node_exchange.py) sees only changes;
    a record merged into another, or no longer encodable, loses its encoding and gets a tombstone in
    the node's feed (node_feed.py), so the comparer withdraws its pairs."""
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
                if row.merged_into is not None:  # merged into another record: no encoding (a tombstone in the feed)
                    continue
                rec = records.prepared_or_none(rt.cipher, row)
                if rec is None:
                    continue
                valid.add(row.id)
                block = f"{row.birth_date.year}:{row.sex}"
                enc = {"patient_id": row.id, "custodian": row.custodian, "block": block,
                       "clk": bloom_fields.pack(bloom_fields.encode(keys, rec, block)), "created_at": now}
                if stored.get(row.id) != (enc["block"], enc["clk"]):  # an unchanged encoding keeps its time
                    out.append(enc)
            gone = [i for i in ids if i in stored and i not in valid]  # merged or no longer encodable
            node_feed.write(s, province, out, gone, now)  # last: holds the feed lock until this commits
            n, changed = n + len(valid), changed + len(out) + len(gone)
        after = rows[-1].id
    with rt.sessions.begin() as s:
        dedupe._trail(uuid.uuid4()).record(s, "linkage.encode", audit.SUCCESS, resource_type="LinkCandidate",
                                           detail={"province": province, "encoded": n, "changed": changed})
    return n


def compare(rt) -> tuple[int, int]:
    """National layer: compare encodings across custodians; returns (pairs compared, new candidates).
    Needs no linkage secret (popcounts and token equality on the stored encodings): the national
    layer runs it with a keyring that has no `linkage-secret`. Encodings of an older model (a
    `clk-1` CLK) are not compared: `nhr dedupe encode` re-encodes them."""
    with rt.sessions() as s:
        rows = s.execute(select(ENC.c.patient_id, ENC.c.custodian, ENC.c.block, ENC.c.clk)).all()
    blocks: dict[str, list] = defaultdict(list)
    for r in rows:
        enc = bloom_fields.unpack(r.clk)
        if enc is not None:
            blocks[r.block].append((r.patient_id, r.custodian, enc))
    compared, proposed = 0, 0
    with rt.sessions.begin() as s:
        for members in blocks.values():
            model = bloom_fields.model_for_block(len(members))  # the block's prior: expected matches / pairs
            for i, j in sorted(bloom_fields.candidate_pairs(members)):  # different custodians sharing a candidate key
                (a, _, xa), (b, _, xb) = members[i], members[j]
                compared += 1
                sc = bloom_fields.score(xa, xb, model)
                if sc.grade is None:
                    continue
                if repo.propose(s, a, b, weight=sc.weight, probability=sc.probability, grade=sc.grade, levels=sc.levels,
                                model_version=MODEL_VERSION, source="cross_province") == "new":
                    proposed += 1
        dedupe._trail(uuid.uuid4()).record(s, "linkage.cross_province", audit.SUCCESS, resource_type="LinkCandidate",
                                           detail={"compared": compared, "proposed": proposed})
    return compared, proposed
