"""The sealer: gives committed audit events their Merkle positions and signs a checkpoint.

Invariants:
- Runs behind the request path (a background task, or `nhr audit seal`), never inside a
  request: requests only insert events and never wait on a chain head.
- One sealer at a time across processes and hosts: on PostgreSQL a transaction-scoped advisory
  lock; on SQLite every transaction starts with BEGIN IMMEDIATE, which serialises writers.
- In one transaction: the new leaves (positions consecutive after the last one, events in
  (occurred_at, id) order within the batch) and the checkpoint at the new size. So the latest
  checkpoint always covers every leaf; a seal that fails leaves nothing behind.
- Only committed events are seen (they are read in the sealer's own transaction), and an event
  gets exactly one leaf (UNIQUE event_id). An event committed late (its transaction outlived
  the seal) is appended in a later batch: positions follow sealing order, not occurred_at.
- The next root comes from the previous checkpoint's compact range (O(log n)), not from
  re-reading every leaf; `verify` recomputes everything from the events and trusts nothing
  stored here.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy import func, insert, select, text
from sqlalchemy.orm import Session

from security.audit import leaf
from security.audit.checkpoint import Checkpoint, Signer
from security.audit.merkle import Frontier
from security.audit.models import AuditCheckpointRow, AuditEventRow, AuditEventSubjectRow, AuditLogLeafRow

EVENTS = AuditEventRow.__table__
SUBJECTS = AuditEventSubjectRow.__table__
LEAVES = AuditLogLeafRow.__table__
CHECKPOINTS = AuditCheckpointRow.__table__
ADVISORY_LOCK = 0x6E68722D61756474  # "nhr-audt"
_CHUNK = 2000


class SealError(RuntimeError):
    """The stored log is not in a state the sealer can extend (run `nhr audit verify`)."""


@dataclass(frozen=True)
class SealResult:
    sealed: int
    checkpoint: Checkpoint


def latest_checkpoint(session: Session) -> Checkpoint | None:
    row = session.execute(select(CHECKPOINTS).order_by(CHECKPOINTS.c.tree_size.desc()).limit(1)).first()
    return _checkpoint(row) if row else None


def _checkpoint(row) -> Checkpoint:
    return Checkpoint(row.tree_size, bytes(row.root_hash), row.signed_at, row.key_id, bytes(row.signature))


def _pending(session: Session, limit: int, lookback: timedelta | None, since: datetime | None):
    q = (select(EVENTS).outerjoin(LEAVES, LEAVES.c.event_id == EVENTS.c.id).where(LEAVES.c.event_id.is_(None))
         .order_by(EVENTS.c.occurred_at, EVENTS.c.id).limit(limit))
    if lookback is not None and since is not None:
        q = q.where(EVENTS.c.occurred_at >= since - lookback)
    return session.execute(q).all()


def _subjects(session: Session, ids: list) -> dict:
    out: dict = {}
    for i in range(0, len(ids), _CHUNK):
        rows = session.execute(select(SUBJECTS.c.event_id, SUBJECTS.c.patient_id)
                               .where(SUBJECTS.c.event_id.in_(ids[i:i + _CHUNK]))).all()
        for event_id, patient_id in rows:
            out.setdefault(event_id, []).append(patient_id)
    return out


def seal(session: Session, signer: Signer, *, limit: int = 100_000,
         lookback: timedelta | None = None) -> SealResult | None:
    """Seal up to `limit` unsealed events; None if there were none (no checkpoint is written).

    `lookback` bounds the search for unsealed events to those no older than the last sealed
    event minus `lookback` (the background sealer's cheap path); None scans the whole table.
    The caller commits (the session's transaction is the seal's unit)."""
    if session.get_bind().dialect.name == "postgresql":
        session.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": ADVISORY_LOCK})
    last = session.execute(select(CHECKPOINTS).order_by(CHECKPOINTS.c.tree_size.desc()).limit(1)).first()
    size = last.tree_size if last else 0
    top = session.execute(select(func.max(LEAVES.c.position))).scalar_one()
    if (top if top is not None else -1) != size - 1:
        raise SealError("the leaves and the latest checkpoint disagree")
    frontier = Frontier.unpack(size, bytes(last.compact_range)) if last else Frontier()
    since = None
    if lookback is not None and top is not None:
        since = session.execute(select(EVENTS.c.occurred_at).join(LEAVES, LEAVES.c.event_id == EVENTS.c.id)
                                .where(LEAVES.c.position == top)).scalar_one()
    events = _pending(session, limit, lookback, since)
    if not events:
        return None
    subjects = _subjects(session, [e.id for e in events])
    rows = []
    for i, e in enumerate(events):
        h = leaf.event_leaf_hash(e._mapping, subjects.get(e.id, ()))
        frontier.append(h)
        rows.append({"position": size + i, "event_id": e.id, "leaf_hash": h})
    session.execute(insert(LEAVES), rows)
    cp = signer.sign(frontier.size, frontier.root(), datetime.now(UTC))
    session.execute(insert(CHECKPOINTS).values(
        tree_size=cp.tree_size, root_hash=cp.root_hash, signed_at=cp.signed_at, key_id=cp.key_id,
        signature=cp.signature, compact_range=frontier.pack()))
    return SealResult(len(rows), cp)
