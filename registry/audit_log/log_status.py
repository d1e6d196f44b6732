"""The audit log's verification status for auditors: the latest signed checkpoint (its size and
time) and whether the log up to it verifies, computed now, in the request's own transaction, by
the same verifier as `nhr audit verify` (security/audit/verify.py).

Invariants:
- Every call writes exactly one audit event (`audit.verification`) with the outcome of the check
  (intact or not, the tree size), never an event's content.
- Nothing stored by the sealer is trusted: every leaf hash and root is recomputed from the events
  and every checkpoint signature is checked with the registry's public key.
- The problem, when there is one, is the verifier's message: positions, event ids, checkpoint
  sizes, key ids and column names, never a value of an event.
- Cost: one read of the whole audit log (O(events)); the page and the API run it on demand, the
  scheduled check remains `nhr audit verify` (docs/audit.md).
"""

from __future__ import annotations

import base64
from datetime import UTC, datetime

from pydantic import BaseModel, ConfigDict

from registry.audit_log import sealing
from registry.context import ServiceContext
from security.audit import trail as audit
from security.audit import sealer, verify

ACTION = "audit.verification"

_EXAMPLE = {
    "checked_at": "2026-11-22T05:20:11.402000Z", "intact": True, "problem": None,
    "checkpoint": {"tree_size": 7, "signed_at": "2026-11-22T05:14:02.131000Z", "key_id": "3570d230",
                   "root_hash": "/eC8JGQVLcE8epBMGed8zaK078zdsbcCmz3bB++R2cs="},
    "checkpoints": 2, "events": 9, "unsealed": 2, "quarantined": 0}


class CheckpointSummary(BaseModel):
    tree_size: int
    signed_at: datetime
    key_id: str
    root_hash: str  # base64


class LogStatus(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [_EXAMPLE]})

    checked_at: datetime
    intact: bool
    problem: str | None = None  # the first discrepancy (positions and ids, never an event's content)
    checkpoint: CheckpointSummary | None = None  # the latest signed checkpoint; None before the first seal
    checkpoints: int = 0
    events: int = 0
    unsealed: int = 0  # events newer than the latest checkpoint (sealed within seconds)
    quarantined: int = 0  # sealed but not vouched for by the registry (docs/audit.md)


def _latest(ctx: ServiceContext) -> CheckpointSummary | None:
    try:
        cp = sealer.latest_checkpoint(ctx.session)
    except (TypeError, ValueError):  # an unreadable row: the verification below reports it as damaged
        return None
    if cp is None:
        return None
    signed_at = cp.signed_at if cp.signed_at.tzinfo else cp.signed_at.replace(tzinfo=UTC)  # SQLite keeps no zone
    return CheckpointSummary(tree_size=cp.tree_size, signed_at=signed_at, key_id=cp.key_id,
                             root_hash=base64.b64encode(cp.root_hash).decode())


def status(ctx: ServiceContext) -> LogStatus:
    checked_at = datetime.now(UTC)
    summary = _latest(ctx)
    try:
        report = verify.verify_database(ctx.session, sealing.origin(ctx.runtime), sealing.public_key(ctx.runtime),
                                        isolate=False)
    except verify.Discrepancy as exc:
        ctx.trail.record(ctx.session, ACTION, audit.SUCCESS, resource_type="AuditEvent",
                         detail={"intact": False, "tree_size": summary.tree_size if summary else 0})
        return LogStatus(checked_at=checked_at, intact=False, problem=str(exc), checkpoint=summary)
    ctx.trail.record(ctx.session, ACTION, audit.SUCCESS, resource_type="AuditEvent",
                     detail={"intact": True, "tree_size": report.tree_size, "quarantined": len(report.quarantined)})
    return LogStatus(checked_at=checked_at, intact=True, checkpoint=summary, checkpoints=report.checkpoints,
                     events=report.events, unsealed=report.unsealed, quarantined=len(report.quarantined))
