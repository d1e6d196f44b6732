"""Signed checkpoints and Merkle proofs of the audit log (RFC 9162), and the log's verification
status, for auditors. Each request is itself audited (`audit.proof`, `audit.verification`)."""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, Depends, Query

from api.deps import require
from api.routing import GatedRoute
from registry.audit_log import log_status, proofs
from registry.context import ServiceContext
from security.access.permissions import Permission as P

router = APIRouter(route_class=GatedRoute, prefix="/api/v1/audit", tags=["audit"])
Auditor = Annotated[ServiceContext, Depends(require(P.AUDIT_READ, action="audit.proof"))]


@router.get("/checkpoints/latest", response_model=proofs.CheckpointView, summary="The latest signed checkpoint")
def latest_checkpoint(ctx: Auditor):
    return proofs.latest_checkpoint(ctx)


@router.get("/events/{event_id}/proof", response_model=proofs.InclusionProofView,
            summary="Inclusion proof: this event is in the log under a signed checkpoint")
def inclusion_proof(event_id: uuid.UUID, ctx: Auditor,
                    tree_size: Annotated[int | None, Query(ge=1, description="a checkpoint's size; default the latest")] = None):
    return proofs.inclusion(ctx, event_id, tree_size)


@router.get("/consistency", response_model=proofs.ConsistencyProofView,
            summary="Consistency proof: the checkpoint of size `second` extends the one of size `first`")
def consistency_proof(ctx: Auditor, first: Annotated[int, Query(ge=1)], second: Annotated[int, Query(ge=1)]):
    return proofs.consistency(ctx, first, second)


@router.get("/public-key", response_model=proofs.PublicKeyView, summary="The checkpoint verification key")
def public_key(ctx: Auditor):
    return proofs.public_key(ctx)


@router.get("/verification", response_model=log_status.LogStatus,
            summary="Verify the audit log now: the latest checkpoint, its size and time, and whether the log up to it verifies",
            description="Recomputes every leaf hash and root from the events and checks every checkpoint's signature and "
                        "consistency, as `nhr audit verify` does (one read of the whole log). `intact: false` carries the "
                        "first discrepancy in `problem` (positions, event ids, sizes; never an event's content). "
                        "Audited as `audit.verification`.")
def verification(ctx: Annotated[ServiceContext, Depends(require(P.AUDIT_READ, action=log_status.ACTION))]):
    return log_status.status(ctx)
