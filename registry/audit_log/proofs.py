"""Checkpoints and Merkle proofs for auditors and outside verifiers (DESIGN invariant 5).

Invariants:
- Every call writes exactly one audit event (`audit.proof`), success or refusal.
- A proof carries only hashes, positions and event ids: never an event's content.
- An inclusion proof is given only for an event inside the caller's jurisdiction (the same
  scope as the event search); outside it the event is "not found", so existence does not leak.
- Proofs are computed from the stored leaf hashes (O(n) read and build, O(log n) per proof);
  the verifier checks them against a signed checkpoint, so nothing here needs to be trusted.
"""

from __future__ import annotations

import uuid

from pydantic import BaseModel, ConfigDict
from sqlalchemy import select

from registry.audit_log import repository as repo
from registry.audit_log import sealing
from registry.context import ServiceContext
from registry.errors import InvalidInput, NotFound
from security.audit import trail as audit
from security.audit.checkpoint import Checkpoint, body, key_id, public_key_pem
from security.audit.merkle import Tree
from security.audit.sealer import CHECKPOINTS, LEAVES, _checkpoint


# Examples for the OpenAPI document: a real Ed25519 signature and real RFC 9162 proofs over a
# 7-event example log, made with a throwaway key (the key id and PEM below belong to it).
_EXAMPLE_CHECKPOINT_5 = {
    "origin": "nhr/PK", "tree_size": 5,
    "root_hash": "OGwb4e0ZGrsNHBhGK9wIy25Q+O3vbx2b/IS+yDem0nA=",
    "signed_at": "2026-11-22T05:14:00.125000Z", "key_id": "3570d230",
    "signature": "1o4z/u6fvRNnTE6pE6mv0Rnmc2F2oLpHy1UgEgSRNPexLnvG+7l90RIIO9asXAuFTzV8XeCYDWGDhzS0k5vNDA==",
    "note_body": "nhr/PK\n5\nOGwb4e0ZGrsNHBhGK9wIy25Q+O3vbx2b/IS+yDem0nA=\ntime 2026-11-22T05:14:00.125000Z\n"}
_EXAMPLE_CHECKPOINT_7 = {
    "origin": "nhr/PK", "tree_size": 7,
    "root_hash": "/eC8JGQVLcE8epBMGed8zaK078zdsbcCmz3bB++R2cs=",
    "signed_at": "2026-11-22T05:14:02.131000Z", "key_id": "3570d230",
    "signature": "zqbJaSohJ5VaXBpZvu7sEwTdqL+cSzrI+h5AdRLt+3bOQNUSReTVt/wI0JccieXogQUdbCqYc/VALgqAXwcTDg==",
    "note_body": "nhr/PK\n7\n/eC8JGQVLcE8epBMGed8zaK078zdsbcCmz3bB++R2cs=\ntime 2026-11-22T05:14:02.131000Z\n"}
_EXAMPLE_KEY_PEM = "-----BEGIN PUBLIC KEY-----\nMCowBQYDK2VwAyEAx4HUIB3IRqb8Np29I6ea4HN02hq6P6BxxJ0nmKHFPVQ=\n-----END PUBLIC KEY-----\n"


class CheckpointView(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [_EXAMPLE_CHECKPOINT_7]})

    origin: str
    tree_size: int
    root_hash: str  # base64
    signed_at: str
    key_id: str
    signature: str  # base64 Ed25519 over the note body
    note_body: str  # the exact signed text


class InclusionProofView(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [{
        "event_id": "0b8e6a3c-5f21-4d9e-8c47-2a9d13f6e501", "leaf_index": 6,
        "leaf_hash": "df03dcc664fb22ac5777f73acee5d0dcfdd1ac9e771acd268715bd9a7c1c6281", "tree_size": 7,
        "audit_path": ["d275eb28e061f4205b3eb9ef6dc03f809d9e84c9ffd4c92dce83e7545ccc536b",
                       "167dea9d30203e7e789078580a2b69b9d7aa8749d9f351748efa3658fcb39391"],
        "checkpoint": _EXAMPLE_CHECKPOINT_7}]})

    event_id: uuid.UUID
    leaf_index: int
    leaf_hash: str  # hex
    tree_size: int
    audit_path: list[str]  # hex, leaf side first (RFC 9162 section 2.1.3)
    checkpoint: CheckpointView
    # Set when the sealer sealed this event without vouching for it (no valid MAC, or back-dated:
    # security/audit/sealer.py); bound into the leaf hash, so a proof cannot drop or add it.
    quarantine: str | None = None


class ConsistencyProofView(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [{
        "first": 5, "second": 7,
        "proof": ["657b08644e486f7fee492059802894e385cd44c43417736c23d0662e53bf62d5",
                  "a805c3f2eb7438945f65e0103fe967c78843f793a02b496bcfcc3f2ec2661759",
                  "df03dcc664fb22ac5777f73acee5d0dcfdd1ac9e771acd268715bd9a7c1c6281",
                  "167dea9d30203e7e789078580a2b69b9d7aa8749d9f351748efa3658fcb39391"],
        "first_checkpoint": _EXAMPLE_CHECKPOINT_5, "second_checkpoint": _EXAMPLE_CHECKPOINT_7}]})

    first: int
    second: int
    proof: list[str]  # hex (RFC 9162 section 2.1.4)
    first_checkpoint: CheckpointView
    second_checkpoint: CheckpointView


class PublicKeyView(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [{
        "origin": "nhr/PK", "algorithm": "Ed25519", "key_id": "3570d230", "public_key_pem": _EXAMPLE_KEY_PEM}]})

    origin: str
    algorithm: str = "Ed25519"
    key_id: str
    public_key_pem: str


def _view(ctx: ServiceContext, cp: Checkpoint) -> CheckpointView:
    origin = sealing.origin(ctx.runtime)
    d = cp.as_json()
    return CheckpointView(origin=origin, note_body=body(origin, cp.tree_size, cp.root_hash, cp.signed_at).decode(), **d)


def _record(ctx: ServiceContext, outcome: str, what: str, **detail) -> None:
    ctx.trail.record(ctx.session, "audit.proof", outcome, resource_type="AuditEvent", detail={"what": what, **detail})


def _checkpoint_at(ctx: ServiceContext, size: int | None, what: str) -> Checkpoint:
    q = select(CHECKPOINTS)
    q = q.where(CHECKPOINTS.c.tree_size == size) if size is not None else q.order_by(CHECKPOINTS.c.tree_size.desc()).limit(1)
    row = ctx.session.execute(q).first()
    if row is None:
        _record(ctx, audit.NOT_FOUND, what, tree_size=size)
        raise NotFound("no signed checkpoint of that size")
    return _checkpoint(row)


def _tree(ctx: ServiceContext, size: int) -> Tree:
    rows = ctx.session.execute(select(LEAVES.c.leaf_hash).where(LEAVES.c.position < size).order_by(LEAVES.c.position))
    return Tree([bytes(r[0]) for r in rows])


def latest_checkpoint(ctx: ServiceContext) -> CheckpointView:
    cp = _checkpoint_at(ctx, None, "checkpoint")
    _record(ctx, audit.SUCCESS, "checkpoint", tree_size=cp.tree_size)
    return _view(ctx, cp)


def inclusion(ctx: ServiceContext, event_id: uuid.UUID, tree_size: int | None) -> InclusionProofView:
    visible = ctx.session.execute(select(repo.EVENTS.c.id).where(repo.EVENTS.c.id == event_id, repo._scope(ctx.principal))).first()
    sealed = ctx.session.execute(select(LEAVES.c.position, LEAVES.c.quarantine).where(LEAVES.c.event_id == event_id)).first()
    position, quarantine = sealed if sealed is not None else (None, None)
    if visible is None or position is None:
        _record(ctx, audit.NOT_FOUND, "inclusion")
        raise NotFound("no sealed event with that id in your jurisdiction")
    cp = _checkpoint_at(ctx, tree_size, "inclusion")
    if position >= cp.tree_size:
        _record(ctx, audit.NOT_FOUND, "inclusion", tree_size=cp.tree_size)
        raise NotFound("the event was sealed after that checkpoint")
    tree = _tree(ctx, cp.tree_size)
    path = tree.inclusion_proof(position, cp.tree_size)
    _record(ctx, audit.SUCCESS, "inclusion", tree_size=cp.tree_size, leaf_index=position)
    return InclusionProofView(event_id=event_id, leaf_index=position, leaf_hash=tree.levels[0][position].hex(),
                              tree_size=cp.tree_size, audit_path=[p.hex() for p in path], checkpoint=_view(ctx, cp),
                              quarantine=quarantine)


def consistency(ctx: ServiceContext, first: int, second: int) -> ConsistencyProofView:
    if not 0 < first <= second:
        _record(ctx, audit.INVALID, "consistency")
        raise InvalidInput("sizes must satisfy 0 < first <= second", field="first")
    a, b = _checkpoint_at(ctx, first, "consistency"), _checkpoint_at(ctx, second, "consistency")
    proof = _tree(ctx, second).consistency_proof(first, second)
    _record(ctx, audit.SUCCESS, "consistency", first=first, second=second)
    return ConsistencyProofView(first=first, second=second, proof=[p.hex() for p in proof],
                                first_checkpoint=_view(ctx, a), second_checkpoint=_view(ctx, b))


def public_key(ctx: ServiceContext) -> PublicKeyView:
    key = sealing.public_key(ctx.runtime)
    origin = sealing.origin(ctx.runtime)
    _record(ctx, audit.SUCCESS, "public_key")
    return PublicKeyView(origin=origin, key_id=key_id(origin, key), public_key_pem=public_key_pem(key))
