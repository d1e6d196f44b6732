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
- It vouches only for events the registry wrote: an event is sealed as ordinary only if its MAC
  (event_mac.py, keyed by a secret the database never holds) verifies over its canonical bytes
  and it is not dated before the latest checkpoint's signing time minus `grace`. Any other event
  is *quarantined*: sealed at its position with the reason bound into its leaf hash
  (leaf.quarantined_leaf_hash) and reported by `verify` and the sealer's caller. Why seal it
  rather than skip it: the log never stalls on a forged row; the event can no longer be altered
  or deleted unnoticed (it is evidence of a direct write to the database); the mark cannot be
  removed to launder it nor added to discredit a genuine event later; and verify's rule "every
  event older than the sealed range is sealed" keeps holding, so nothing needs a side list.
- It never signs with a key that was handed over (security/audit/handover.py): if the latest
  hand-over names another key than the signer's, it refuses (KeyHandedOver) before writing.
- A seal streams its batch (up to `limit` events): it holds one chunk of `_CHUNK` events, their
  subjects and leaves at a time and writes the chunk's leaves before reading the next, so its
  memory does not follow the backlog (issue 17); it is still one transaction and one checkpoint.
- A pending row that cannot be read at all (rows.py: an impossible date, a malformed UUID,
  broken JSON, a wrong type) has no canonical bytes to seal: it is skipped and counted, never a
  reason to stall, and `verify` reports it as damaged.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy import func, insert, select, text
from sqlalchemy.orm import Session

from security.audit import leaf, rows
from security.audit.checkpoint import Checkpoint, Signer
from security.audit.event_mac import EventMac
from security.audit.merkle import Frontier, leaf_hash
from security.audit.models import (AuditCheckpointRow, AuditEventRow, AuditEventSubjectRow, AuditKeyHandoverRow,
                                   AuditLogLeafRow)

EVENTS = AuditEventRow.__table__
SUBJECTS = AuditEventSubjectRow.__table__
LEAVES = AuditLogLeafRow.__table__
CHECKPOINTS = AuditCheckpointRow.__table__
HANDOVERS = AuditKeyHandoverRow.__table__
ADVISORY_LOCK = 0x6E68722D61756474  # "nhr-audt"
_CHUNK = 2000
MISSING_MAC, BAD_MAC, BACKDATED = "missing_mac", "bad_mac", "backdated"
QUARANTINE_REASONS = (MISSING_MAC, BAD_MAC, BACKDATED)


class SealError(RuntimeError):
    """The stored log is not in a state the sealer can extend (run `nhr audit verify`)."""


class KeyHandedOver(SealError):
    """The checkpoint key was handed over to another key than the one this process signs with
    (security/audit/handover.py): signing with it would make a checkpoint that does not verify."""


@dataclass(frozen=True)
class SealResult:
    sealed: int
    checkpoint: Checkpoint | None  # None: nothing could be sealed (only unreadable rows were pending)
    quarantined: tuple[tuple[int, str], ...] = ()  # (position, reason) of the events sealed without being vouched for
    unreadable: int = 0  # pending rows that cannot be read at all: left unsealed (verify reports them damaged)


def latest_checkpoint(session: Session) -> Checkpoint | None:
    row = session.execute(select(CHECKPOINTS).order_by(CHECKPOINTS.c.tree_size.desc()).limit(1)).first()
    return _checkpoint(row) if row else None


def _checkpoint(row) -> Checkpoint:
    return Checkpoint(row.tree_size, bytes(row.root_hash), row.signed_at, row.key_id, bytes(row.signature))


def _pending(session: Session, limit: int, lookback: timedelta | None, since: datetime | None,
             unreadable: list[int]) -> Iterator[list[dict]]:
    """Unsealed events (oldest first), `_CHUNK` at a time, streamed from the database (a
    server-side cursor on PostgreSQL), so a seal holds one chunk of events, never the batch.
    Rows that cannot be read at all (rows.py: skipped, never sealed, never a reason to stall;
    `verify` reports them as damaged) are counted in unreadable[0]."""
    q = (rows.raw_select(EVENTS).select_from(EVENTS.outerjoin(LEAVES, LEAVES.c.event_id == EVENTS.c.id))
         .where(LEAVES.c.event_id.is_(None)).order_by(rows.raw(EVENTS.c.occurred_at), rows.raw(EVENTS.c.id)).limit(limit)
         .execution_options(yield_per=_CHUNK))
    if lookback is not None and since is not None:
        q = q.where(EVENTS.c.occurred_at >= since - lookback)
    chunk: list[dict] = []
    for _, values, _, _ in rows.read(session, q, EVENTS, chunk=_CHUNK):
        if values is None or not isinstance(values["id"], uuid.UUID):
            unreadable[0] += 1
            continue
        chunk.append(values)
        if len(chunk) == _CHUNK:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def _subjects(session: Session, ids: list) -> tuple[dict, set]:
    """Subject ids per event, and the events with a subject row that cannot be read."""
    out: dict = {}
    damaged: set = set()
    for i in range(0, len(ids), _CHUNK):
        q = rows.raw_select(SUBJECTS).where(SUBJECTS.c.event_id.in_(ids[i:i + _CHUNK]))
        for _, values, stored, _ in rows.read(session, q, SUBJECTS):
            if values is None:
                try:
                    damaged.add(stored["event_id"] if isinstance(stored["event_id"], uuid.UUID)
                                else uuid.UUID(str(stored["event_id"])))
                except ValueError:  # cannot be: the row matched one of `ids`
                    pass
                continue
            out.setdefault(values["event_id"], []).append(values["patient_id"])
    return out, damaged


def _quarantine(mac: EventMac, leaf_bytes: bytes, stored_mac, occurred_at: datetime,
                not_before: datetime | None) -> str | None:
    """Why the sealer cannot vouch for an event, or None."""
    if stored_mac is None:
        return MISSING_MAC
    if not mac.verifies(leaf_bytes, stored_mac):
        return BAD_MAC
    if not_before is not None and occurred_at < not_before:
        return BACKDATED
    return None


def seal(session: Session, signer: Signer, *, mac: EventMac, grace: timedelta, limit: int = 100_000,
         lookback: timedelta | None = None) -> SealResult | None:
    """Seal up to `limit` unsealed events; None if there were none (no checkpoint is written).

    `mac` checks each event's MAC; `grace`: how far before the latest checkpoint's signing time an
    event may be dated and still be vouched for (a transaction that began before the last seal and
    committed after it). `lookback` bounds the search for unsealed events to those no older than
    the last sealed event minus `lookback` (the background sealer's cheap path); None scans the
    whole table. The caller commits (the session's transaction is the seal's unit)."""
    if session.get_bind().dialect.name == "postgresql":
        session.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": ADVISORY_LOCK})
    current = session.execute(select(HANDOVERS.c.new_key_id).order_by(HANDOVERS.c.sequence.desc()).limit(1)).scalar()
    if current is not None and current != signer.key_id:
        raise KeyHandedOver(f"the checkpoint key was handed over to key {current}; this signer holds key {signer.key_id}")
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
    not_before = last.signed_at - grace if last else None
    sealed, quarantined, unreadable = 0, [], [0]
    # One chunk of events, subjects and leaves in memory at a time (issue 17: the whole batch
    # took `nhr worker` to 528 MiB); its leaves are written before the next chunk is read. The
    # leaves written are those of events the query has already returned, so they change none of
    # the rows still to come (PostgreSQL's cursor reads its starting snapshot in any case).
    for events in _pending(session, limit, lookback, since, unreadable):
        subjects, damaged = _subjects(session, [e["id"] for e in events])
        leaves = []
        for e in events:
            try:
                data = leaf.encode(leaf.canonical_fields(e), leaf.canonical_subjects(subjects.get(e["id"], ())))
                if e["id"] in damaged or not isinstance(e["detail"], dict):
                    raise ValueError
            except (ValueError, TypeError):  # a value of the wrong type (rows.py): not sealed, reported
                unreadable[0] += 1
                continue
            position = size + sealed + len(leaves)
            reason = _quarantine(mac, data, e["mac"], e["occurred_at"], not_before)
            h = leaf.sealed_leaf_hash(leaf_hash(data), reason)
            frontier.append(h)
            leaves.append({"position": position, "event_id": e["id"], "leaf_hash": h, "quarantine": reason})
            if reason is not None:
                quarantined.append((position, reason))
        if leaves:
            session.execute(insert(LEAVES), leaves)
            sealed += len(leaves)
    if not sealed:
        return SealResult(0, None, (), unreadable[0]) if unreadable[0] else None
    cp = signer.sign(frontier.size, frontier.root(), datetime.now(UTC))
    session.execute(insert(CHECKPOINTS).values(
        tree_size=cp.tree_size, root_hash=cp.root_hash, signed_at=cp.signed_at, key_id=cp.key_id,
        signature=cp.signature, compact_range=frontier.pack()))
    return SealResult(sealed, cp, tuple(quarantined), unreadable[0])
