"""Verifying the sealed audit log, from the database or from an offline export.

Checks, in log order, stopping at the first disagreement:
- leaf positions are consecutive from 0 and each names an event that exists, once;
- each event's leaf hash, recomputed from its columns and subjects (leaf.py), equals its stored
  leaf hash;
- at each checkpoint's size, the root recomputed from the events equals the signed root, the
  Ed25519 signature verifies with the given public key, and the checkpoint is consistent with
  the previous one (RFC 9162 consistency proof);
- the latest checkpoint covers every leaf, and every event has a leaf (in an export: all of
  them; in the database: all but those newer than the latest checkpoint minus a grace period);
- optionally, the log extends a checkpoint the verifier trusted earlier (this is what catches a
  log truncated together with its checkpoints);
- each checkpoint is signed by the key in force at its size: the verifier's key, or a successor
  reached through signed key hand-overs (handover.py);
- optionally (`required_witnesses`), some checkpoint carries that many valid cosignatures of
  configured witnesses: what catches a log rewritten together with re-signed checkpoints.

Quarantined leaves (events the sealer sealed without vouching for them, sealer.py) verify like any
other leaf (their hash binds the reason) and are listed in the report: the log is intact, but it
holds events the registry did not write.

A row that cannot be read (an impossible date, a malformed UUID, broken JSON, a value of the wrong
type: possible on SQLite, whose columns are not typed) is not a crash: every such row is reported
as damaged, by leaf position (or table and row number), with the column's name, never its value.

Invariants: messages name positions, event ids, checkpoint sizes, key ids and column names, never
a value of an event; nothing stored by the sealer is trusted (roots are recomputed from the events).
"""

from __future__ import annotations

import base64
import json
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Iterable, Iterator

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from sqlalchemy import select
from sqlalchemy.orm import Session

from security.audit import handover, leaf, note, rows
from security.audit.checkpoint import Checkpoint, public_key_pem
from security.audit.merkle import Frontier, ProofError, Tree, verify_consistency
from security.audit.sealer import CHECKPOINTS, EVENTS, LEAVES, SUBJECTS, _checkpoint
from security.audit import witnessed
from security.audit.witnessed import NotWitnessed, witnessed_size

EXPORT_FORMAT = "nhr-audit-export/v1"


class Discrepancy(Exception):
    """The first place where the log and its seals disagree (the message is patient-data-free)."""


class Damaged(Discrepancy):
    """Rows that cannot be read at all (listed by position or row number and column, no value)."""


@dataclass
class Snapshot:
    """What verification needs: per event its recomputed leaf hash and time, the leaves, the
    checkpoints. Built from the database or from an export."""

    origin: str
    event_hashes: dict[str, bytes] = field(default_factory=dict)
    event_times: dict[str, str] = field(default_factory=dict)
    leaves: list[tuple[int, str, bytes, str | None]] = field(default_factory=list)  # position, event, hash, quarantine
    checkpoints: list[Checkpoint] = field(default_factory=list)
    damaged: list[str] = field(default_factory=list)  # where rows could not be read (no values)
    handovers: list[str] = field(default_factory=list)  # signed key hand-over statements, in sequence
    cosignatures: list[dict] = field(default_factory=list)  # tree_size, witness_name, key_id, signature (bytes)

    def add_event(self, fields: list[str | None], subjects: Iterable[str]) -> None:
        eid = fields[0]
        if eid in self.event_hashes:
            raise Discrepancy(f"event {eid} appears twice")
        self.event_hashes[eid] = leaf.text_leaf_hash(fields, leaf.canonical_subjects(subjects))
        self.event_times[eid] = fields[1] or ""


@dataclass
class Report:
    tree_size: int
    checkpoints: int
    events: int
    unsealed: int
    quarantined: list[tuple[int, str, str]] = field(default_factory=list)  # position, event id, reason
    witnessed: int | None = None  # the largest checkpoint size cosigned by enough witnesses (when required)
    witnesses_required: int = 0
    key_handovers: int = 0

    def summary(self) -> str:
        return (f"intact: {self.tree_size} sealed events under {self.checkpoints} signed checkpoints"
                + (f" ({self.key_handovers} signing-key hand-overs followed)" if self.key_handovers else "")
                + (f"; witnessed by at least {self.witnesses_required} witnesses up to size {self.witnessed}"
                   + (f" ({self.tree_size - self.witnessed} later events not yet witnessed)"
                      if self.witnessed is not None and self.witnessed < self.tree_size else "")
                   if self.witnesses_required else "")
                + (f"; {self.unsealed} recent events not yet sealed" if self.unsealed else "")
                + (f"; {len(self.quarantined)} QUARANTINED events (sealed but not vouched for by the registry: "
                   "written outside it, or back-dated)" if self.quarantined else ""))

    def findings(self) -> list[str]:
        return [f"position {p}: event {eid} quarantined ({reason})" for p, eid, reason in self.quarantined]


def verify_snapshot(snap: Snapshot, public_key: Ed25519PublicKey, *, unsealed_before: str | None = None,
                    trusted: tuple[int, bytes] | None = None, witnesses: list[note.Verifier] | None = None,
                    required_witnesses: int = 0) -> Report:
    """Raises Discrepancy at the first disagreement. `unsealed_before`: canonical timestamp;
    an event without a leaf older than it is a discrepancy (None: every event must be sealed).
    `public_key`: a checkpoint key the verifier trusts; checkpoints are checked under the key in
    force at their size, following the signed key hand-overs (handover.py) through it.
    `required_witnesses` > 0: some checkpoint must carry that many valid cosignatures of distinct
    keys among `witnesses` (a log rewritten and re-signed with the registry's key has none)."""
    try:
        keys = handover.chain(snap.origin, public_key, snap.handovers)
    except handover.HandoverError as exc:
        raise Discrepancy(f"checkpoint keys: {exc}") from None
    if snap.damaged:
        shown = "; ".join(snap.damaged[:50]) + (f"; and {len(snap.damaged) - 50} more" if len(snap.damaged) > 50 else "")
        raise Damaged(f"{len(snap.damaged)} damaged row(s) that cannot be read: {shown}")
    leaves = sorted(snap.leaves, key=lambda x: x[0])
    checkpoints = sorted(snap.checkpoints, key=lambda c: c.tree_size)
    for a, b in zip(checkpoints, checkpoints[1:]):
        if a.tree_size == b.tree_size:
            raise Discrepancy(f"two checkpoints claim tree size {a.tree_size}")
    frontier, hashes, seen, ci, quarantined = Frontier(), [], {}, 0, []
    while ci < len(checkpoints) and checkpoints[ci].tree_size == 0:
        _check_checkpoint(snap.origin, checkpoints[ci], frontier.root(), keys)
        ci += 1
    for expected, (position, eid, stored, reason) in enumerate(leaves):
        if position != expected:
            raise Discrepancy(f"leaf positions are not consecutive: expected {expected}, found {position}")
        recomputed = snap.event_hashes.get(eid)
        if recomputed is None:
            raise Discrepancy(f"position {position}: sealed event {eid} is missing from the log (deleted)")
        if eid in seen:
            raise Discrepancy(f"event {eid} is sealed twice (positions {seen[eid]} and {position})")
        seen[eid] = position
        if reason is not None:
            recomputed = leaf.quarantined_leaf_hash(recomputed, reason)
            quarantined.append((position, eid, reason))
        if recomputed != stored:
            raise Discrepancy(f"event {eid} at position {position}: its columns or subjects do not match its sealed "
                              "leaf hash (altered or moved event)")
        frontier.append(recomputed)
        hashes.append(recomputed)
        while ci < len(checkpoints) and checkpoints[ci].tree_size == frontier.size:
            _check_checkpoint(snap.origin, checkpoints[ci], frontier.root(), keys)
            ci += 1
    if ci < len(checkpoints):
        raise Discrepancy(f"checkpoint at size {checkpoints[ci].tree_size} covers more events than the log holds "
                          f"({len(leaves)}): sealed events were removed (truncated log)")
    latest = checkpoints[-1].tree_size if checkpoints else 0
    if len(leaves) != latest:
        raise Discrepancy(f"{len(leaves) - latest} leaves after position {latest - 1} are not covered by any signed "
                          f"checkpoint (latest size {latest})")
    if len(checkpoints) > 1:
        tree = Tree(hashes)
        for a, b in zip(checkpoints, checkpoints[1:]):
            try:
                verify_consistency(a.tree_size, b.tree_size, a.root_hash, b.root_hash,
                                   tree.consistency_proof(a.tree_size, b.tree_size))
            except ProofError as exc:
                raise Discrepancy(f"checkpoint at size {b.tree_size} is not consistent with checkpoint at size "
                                  f"{a.tree_size}: {exc}") from None
    if trusted is not None:
        size, root = trusted
        if size > latest:
            raise Discrepancy(f"the log ({latest} sealed events) is shorter than the trusted checkpoint at size {size} "
                              "(truncated log)")
        if Tree(hashes[:size]).root() != root:
            raise Discrepancy(f"the log at size {size} does not match the trusted checkpoint (rewritten history)")
    unsealed = [eid for eid in snap.event_hashes if eid not in seen]
    for eid in sorted(unsealed, key=lambda e: snap.event_times[e]):
        if unsealed_before is None or snap.event_times[eid] < unsealed_before:
            raise Discrepancy(f"event {eid} is not in the sealed log although it is older than the sealed range "
                              "(inserted event)")
    witnessed = None
    if required_witnesses:
        try:
            witnessed = witnessed_size(snap.origin, checkpoints, snap.cosignatures, witnesses or [], required_witnesses)
        except NotWitnessed as exc:
            raise Discrepancy(str(exc)) from None
    return Report(latest, len(checkpoints), len(snap.event_hashes), len(unsealed), quarantined, witnessed,
                  required_witnesses, len(snap.handovers))


def _check_checkpoint(origin: str, cp: Checkpoint, root: bytes, keys: handover.KeyChain) -> None:
    if cp.root_hash != root:
        raise Discrepancy(f"checkpoint at size {cp.tree_size}: its root hash differs from the root recomputed "
                          "from the events")
    key = keys.key_for(cp.tree_size)
    if cp.key_id != key.key_id:
        raise Discrepancy(f"checkpoint at size {cp.tree_size}: signed by key id {cp.key_id}, but key {key.key_id} "
                          "is the one in force at that size (key hand-overs)")
    public_key = key.public_key
    if not cp.verifies(origin, public_key):
        raise Discrepancy(f"checkpoint at size {cp.tree_size}: the signature (key id {cp.key_id}) does not verify "
                          "with the public key")


# --- from the database -----------------------------------------------------------------------

def _rows(session: Session, table, order_by=None):
    stmt = rows.raw_select(table)
    return rows.read(session, stmt.order_by(rows.raw(order_by)) if order_by is not None else stmt, table)


_hashable = rows.hashable


def _db_events(session: Session, snap: Snapshot, positions: dict) -> Iterator[tuple[list, list]]:
    """Events as canonical text with their subjects; unreadable ones go to `snap.damaged`, by leaf
    position when their raw id names a leaf (`positions`: raw event id -> position)."""
    def where(raw_id, table: str, n: int) -> str:
        p = positions.get(_hashable(raw_id))
        return f"position {p}" if p is not None else f"{table} row {n} (unsealed)"

    subjects: dict = {}
    damaged_ids: set = set()
    for n, row, raw, bad in _rows(session, SUBJECTS):
        if row is None or not isinstance(row["event_id"], uuid.UUID) or not isinstance(row["patient_id"], uuid.UUID):
            snap.damaged.append(f"{where(raw['event_id'], 'audit_event_subjects', n)}: audit_event_subjects."
                                f"{bad or 'patient_id'} cannot be read")
            damaged_ids.add(_hashable(raw["event_id"]))
            continue
        subjects.setdefault(row["event_id"], []).append(row["patient_id"])
    for n, row, raw, bad in _rows(session, EVENTS):
        if _hashable(raw["id"]) in damaged_ids:
            continue
        try:
            if row is None:
                raise ValueError
            fields = leaf.canonical_fields(row)
            if fields[0] is None or not isinstance(row["detail"], dict):
                raise ValueError
        except Exception:  # noqa: BLE001 - a value of the wrong type is damage, whatever it raises
            column = bad or _bad_column(row)
            snap.damaged.append(f"{where(raw['id'], 'audit_events', n)}: audit_events.{column} cannot be read")
            continue
        yield fields, [str(s) for s in subjects.get(row["id"], ())]


def _bad_column(row: dict | None) -> str:
    for name in leaf.FIELDS:
        try:
            leaf.canonical_fields({**{f: None for f in leaf.FIELDS}, name: row[name]})
        except Exception:  # noqa: BLE001
            return name
    return "detail"


def _isolate(session: Session) -> None:
    """One snapshot for the whole read: REPEATABLE READ on PostgreSQL (SQLite transactions are
    serialised already). Must be called before the session's transaction starts."""
    if session.get_bind().dialect.name == "postgresql":
        session.connection(execution_options={"isolation_level": "REPEATABLE READ"})


def snapshot_from_db(session: Session, origin: str, *, sealed_only: bool = False) -> Snapshot:
    snap = Snapshot(origin)
    for n, row, _raw, bad in _rows(session, CHECKPOINTS, CHECKPOINTS.c.tree_size):
        try:
            snap.checkpoints.append(_checkpoint(_Row(row)))
            if not isinstance(row["signed_at"], datetime):
                raise TypeError
        except Exception:  # noqa: BLE001
            snap.damaged.append(f"audit_checkpoints row {n}: {bad or 'a column'} cannot be read")
    positions: dict = {}
    for n, row, raw, bad in _rows(session, LEAVES, LEAVES.c.position):
        try:
            item = (int(row["position"]), str(uuid.UUID(str(row["event_id"]))), bytes(row["leaf_hash"]),
                    row["quarantine"])
            if item[3] is not None and not isinstance(item[3], str):
                raise TypeError
        except Exception:  # noqa: BLE001
            snap.damaged.append(f"audit_log_leaves row {n}: {bad or 'a column'} cannot be read")
            continue
        snap.leaves.append(item)
        positions[_hashable(raw["event_id"])] = item[0]
    snap.handovers, snap.cosignatures = witnessed.stored(session)
    sealed = {eid for _, eid, _, _ in snap.leaves} if sealed_only else None
    for fields, subjects in _db_events(session, snap, positions):
        if sealed is None or fields[0] in sealed:
            snap.add_event(fields, subjects)
    return snap


class _Row:
    """Attribute access to a row read by `_rows` (for `sealer._checkpoint`)."""

    def __init__(self, values: dict | None) -> None:
        if values is None:
            raise ValueError
        self.__dict__.update(values)


def verify_database(session: Session, origin: str, public_key: Ed25519PublicKey, *,
                    grace: timedelta = timedelta(minutes=10), trusted: tuple[int, bytes] | None = None,
                    isolate: bool = True, witnesses: list[note.Verifier] | None = None,
                    required_witnesses: int = 0) -> Report:
    """Events newer than the latest checkpoint minus `grace` may be unsealed yet; older ones may not.
    `isolate=False` verifies inside the caller's already-open transaction."""
    if isolate:
        _isolate(session)
    snap = snapshot_from_db(session, origin)
    latest = max(snap.checkpoints, key=lambda c: c.tree_size) if snap.checkpoints and not snap.damaged else None
    cutoff = leaf.timestamp(latest.signed_at - grace) if latest else ""
    return verify_snapshot(snap, public_key, unsealed_before=cutoff, trusted=trusted, witnesses=witnesses,
                           required_witnesses=required_witnesses)


# --- the offline export (NDJSON) ---------------------------------------------------------------

def export_lines(session: Session, origin: str, public_key: Ed25519PublicKey) -> Iterator[str]:
    """Header, then sealed events (all columns as canonical text, and subjects), leaves and
    checkpoints, one JSON object per line. Only events under the latest checkpoint are included."""
    _isolate(session)
    cps = [_checkpoint(r) for r in session.execute(select(CHECKPOINTS).order_by(CHECKPOINTS.c.tree_size))]
    size = cps[-1].tree_size if cps else 0
    leaves = session.execute(select(LEAVES).where(LEAVES.c.position < size).order_by(LEAVES.c.position)).all()
    sealed = {str(r.event_id) for r in leaves}
    snap = Snapshot(origin)
    yield json.dumps({"format": EXPORT_FORMAT, "leaf_encoding": leaf.VERSION, "origin": origin, "tree_size": size,
                      "fields": list(leaf.FIELDS), "public_key": public_key_pem(public_key)})
    for fields, subjects in _db_events(session, snap, {}):
        if fields[0] in sealed:
            yield json.dumps({"kind": "event", "event": dict(zip(leaf.FIELDS, fields)), "subjects": sorted(subjects)})
    if snap.damaged:
        raise Damaged(f"{len(snap.damaged)} damaged row(s): run `nhr audit verify`")
    for r in leaves:
        yield json.dumps({"kind": "leaf", "position": r.position, "event_id": str(r.event_id),
                          "leaf_hash": bytes(r.leaf_hash).hex(), "quarantine": r.quarantine})
    for cp in cps:
        yield json.dumps({"kind": "checkpoint", **cp.as_json()})
    yield from (json.dumps(r) for r in witnessed.export_records(*witnessed.stored(session), size))


def snapshot_from_records(records: Iterable[dict]) -> Snapshot:
    it = iter(records)
    header = next(it, None)
    if not header or header.get("format") != EXPORT_FORMAT or header.get("leaf_encoding") != leaf.VERSION:
        raise Discrepancy("not an NHR audit export of a known version")
    snap = Snapshot(str(header["origin"]))
    try:
        for rec in it:
            kind = rec.get("kind")
            if kind == "event":
                snap.add_event([rec["event"].get(f) for f in leaf.FIELDS], rec.get("subjects", []))
            elif kind == "leaf":
                reason = rec.get("quarantine")
                if reason is not None and not isinstance(reason, str):
                    raise TypeError
                snap.leaves.append((int(rec["position"]), str(rec["event_id"]), bytes.fromhex(rec["leaf_hash"]), reason))
            elif kind == "checkpoint":
                snap.checkpoints.append(Checkpoint.from_json(rec))
            elif kind == "handover":
                snap.handovers.append(str(rec["statement"]))
            elif kind == "cosignature":
                snap.cosignatures.append(witnessed.cosignature_from_record(rec))
            else:
                raise Discrepancy("the export holds a record of an unknown kind")
    except (KeyError, ValueError, TypeError, AttributeError):
        raise Discrepancy("the export holds a malformed record") from None
    return snap


def verify_records(records: Iterable[dict], public_key: Ed25519PublicKey, *,
                   trusted: tuple[int, bytes] | None = None, **witnessing) -> Report:
    return verify_snapshot(snapshot_from_records(records), public_key, trusted=trusted, **witnessing)


def verify_export(path: Path | str, public_key: Ed25519PublicKey, *, trusted: tuple[int, bytes] | None = None,
                  **witnessing) -> Report:
    """Offline: needs only the export file and the registry's public key (never the key embedded
    in the export, which a forger could replace)."""
    def records():
        with open(path, encoding="utf-8") as f:
            for line in f:
                if line.strip():
                    try:
                        yield json.loads(line)
                    except json.JSONDecodeError:
                        raise Discrepancy("the export holds a line that is not JSON") from None
    return verify_records(records(), public_key, trusted=trusted, **witnessing)


def trusted_from_json(d: dict) -> tuple[int, bytes]:
    return int(d["tree_size"]), base64.b64decode(d["root_hash"], validate=True)
