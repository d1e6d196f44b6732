"""The audit log's public transparency surface: signed-note checkpoints, consistency proofs,
witness cosignatures and key hand-overs (issue 16; docs/custody.md#witnesses-of-the-audit-log).

Invariants:
- Only sizes, hashes, signatures and public keys leave here; never an event or an event id. That
  is why these endpoints are public and not audited: a witness polling them must not itself grow
  the log it watches (every audited request would make a new checkpoint to cosign).
- A cosignature is stored only if it verifies, under a witness key listed in
  `NHR_AUDIT_WITNESSES_FILE`, over the exact text of a checkpoint the registry signed; anything
  else is refused, so the table holds nothing an outsider could not have checked.
- A cosigned note whose checkpoint text differs from ours at the same size is refused as a
  conflict: somebody was shown another log (a split view), and the refusal is logged.
"""

from __future__ import annotations

import logging
import threading
from datetime import UTC, datetime
from pathlib import Path

from sqlalchemy import insert, select
from sqlalchemy.orm import Session

from registry.errors import Conflict, InvalidInput, NotFound
from registry.runtime import Runtime
from security.audit import note, witnessed
from security.audit.checkpoint import Checkpoint, body, signed_note
from security.audit.merkle import Tree
from security.audit.models import AuditCosignatureRow, AuditKeyHandoverRow
from security.audit.sealer import CHECKPOINTS, LEAVES, _checkpoint

COSIGNATURES = AuditCosignatureRow.__table__
HANDOVERS = AuditKeyHandoverRow.__table__
MAX_NOTE_BYTES = 16_384
log = logging.getLogger("nhr.audit.transparency")
_lock = threading.Lock()
_witness_cache: dict[Path, tuple[int, list[note.Verifier]]] = {}


def read_witnesses(p: Path) -> list[note.Verifier]:
    """The cosignature/v1 verifier keys in a file, one per line ('#' starts a comment)."""
    out: list[note.Verifier] = []
    for n, line in enumerate(p.read_text(encoding="utf-8").splitlines(), 1):
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        try:
            v = note.parse_vkey(line)
        except note.NoteError as exc:
            raise ValueError(f"{p.name} line {n}: {exc}") from None
        if v.sig_type != note.COSIGNATURE_V1:
            raise ValueError(f"{p.name} line {n}: a witness key is a cosignature/v1 (0x04) key")
        out.append(v)
    return out


def witnesses(rt: Runtime) -> list[note.Verifier]:
    p = rt.settings.audit.witnesses_file
    if p is None or not p.exists():
        return []
    stamp = p.stat().st_mtime_ns
    with _lock:
        hit = _witness_cache.get(p)
        if hit is None or hit[0] != stamp:
            hit = (stamp, read_witnesses(p))
            _witness_cache[p] = hit
        return hit[1]


def _at(session: Session, size: int | None, field: str = "size") -> Checkpoint:
    q = select(CHECKPOINTS)
    q = q.where(CHECKPOINTS.c.tree_size == size) if size is not None else q.order_by(CHECKPOINTS.c.tree_size.desc()).limit(1)
    row = session.execute(q).first()
    if row is None:
        raise NotFound("no signed checkpoint of that size" if size is not None else "no signed checkpoint yet",
                       field=field if size is not None else None)
    return _checkpoint(row)


def checkpoint_note(session: Session, origin: str, size: int | None = None) -> str:
    return signed_note(origin, _at(session, size))


def cosigned_note(session: Session, origin: str, size: int | None = None) -> str:
    """The checkpoint's signed note with every stored cosignature appended."""
    cp = _at(session, size)
    rows = session.execute(select(COSIGNATURES).where(COSIGNATURES.c.tree_size == cp.tree_size)
                           .order_by(COSIGNATURES.c.id)).all()
    text = body(origin, cp.tree_size, cp.root_hash, cp.signed_at).decode()
    sigs = [note.Signature(origin, bytes.fromhex(cp.key_id), cp.signature)]
    sigs += [note.Signature(r.witness_name, bytes.fromhex(r.key_id), bytes(r.signature)) for r in rows]
    return note.format_note(text, sigs)


def consistency(session: Session, first: int, second: int) -> list[bytes]:
    """RFC 9162 consistency proof from any earlier size (what a witness last cosigned, whether or
    not this log still has a checkpoint there) to a signed checkpoint (0 < first <= second)."""
    if not 0 < first <= second:
        raise InvalidInput("sizes must satisfy 0 < from <= to", field="from")
    _at(session, second, "to")
    rows = session.execute(select(LEAVES.c.leaf_hash).where(LEAVES.c.position < second).order_by(LEAVES.c.position))
    return Tree([bytes(r[0]) for r in rows]).consistency_proof(first, second)


def add_cosignatures(session: Session, origin: str, trusted: list[note.Verifier], cosigned: str) -> int:
    """Store the cosignatures of configured witnesses found in a cosigned checkpoint note; returns
    how many were new. The caller commits."""
    if len(cosigned.encode()) > MAX_NOTE_BYTES:
        raise InvalidInput("the note is too large", field="body")
    try:
        text, sigs = note.split(cosigned)
        cp_text = note.parse_checkpoint(text)
    except note.NoteError as exc:
        raise InvalidInput(f"not a cosigned checkpoint: {exc}", field="body") from None
    if cp_text.origin != origin:
        raise InvalidInput("the checkpoint is of another log", field="body")
    cp = _at(session, cp_text.tree_size, "body")
    if body(origin, cp.tree_size, cp.root_hash, cp.signed_at).decode() != text:
        log.error("split view: a cosignature was offered for a checkpoint of size %d that the registry did not sign",
                  cp_text.tree_size)
        raise Conflict("the checkpoint differs from the one the registry signed at that size (split view?)",
                       field="body")
    found = []
    for s in sigs:
        for w in trusted:
            if note.signature_verifies(text, s, w) is not None and w.sig_type == note.COSIGNATURE_V1:
                found.append((w, s))
    if not found:
        raise InvalidInput("no cosignature of a configured witness verifies over this checkpoint", field="body")
    have = {(r.witness_name, r.key_id) for r in session.execute(
        select(COSIGNATURES.c.witness_name, COSIGNATURES.c.key_id).where(COSIGNATURES.c.tree_size == cp.tree_size))}
    new = [{"tree_size": cp.tree_size, "witness_name": w.name, "key_id": w.key_id, "signature": s.data,
            "received_at": datetime.now(UTC)} for w, s in found if (w.name, w.key_id) not in have]
    if new:
        session.execute(insert(COSIGNATURES), new)
    return len(new)


def handover_statements(session: Session) -> list[str]:
    return witnessed.stored(session)[0]


def cosignature_records(session: Session) -> list[dict]:
    return witnessed.stored(session)[1]
