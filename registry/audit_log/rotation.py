"""Rotating the audit log's checkpoint-signing key (`nhr audit rotate-signing-key`, issue 16).

Steps: seal what is pending; generate the successor beside the key (`.next`); in one transaction
under the sealer's lock, record a hand-over statement (security/audit/handover.py) signed by the
old key and countersigned by the new one, at the latest checkpoint's size; then move the new key
into place. From that commit on, the sealer refuses the old key (sealer.KeyHandedOver) and re-reads
the key file, so every later checkpoint is signed by the new key.

Invariants: the old public key keeps verifying every checkpoint up to the hand-over (verify follows
the chain); the old private key is gone from the keyring afterwards; a rotation interrupted after
its commit is finished by running it again (the database names the new key, `.next` holds it).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import func, insert, select, text

from registry.audit_log import sealing
from registry.runtime import Runtime
from security.audit import handover, note, signing_key
from security.audit.checkpoint import verifier
from security.audit.sealer import ADVISORY_LOCK, CHECKPOINTS, HANDOVERS


class RotationError(RuntimeError):
    """The keyring and the recorded hand-overs disagree in a way rotation cannot repair."""


@dataclass(frozen=True)
class Rotated:
    old: note.Verifier
    new: note.Verifier
    tree_size: int


def _finish_interrupted(rt: Runtime, origin: str) -> Rotated | None:
    """A rotation whose hand-over was committed but whose key was not moved into place: finish it."""
    old = signing_key.load(rt.keyring, fresh=True)
    held = verifier(origin, old.public_key())
    with rt.sessions() as s:
        last = s.execute(select(HANDOVERS).order_by(HANDOVERS.c.sequence.desc()).limit(1)).first()
    if last is None or last.new_key_id == held.key_id:
        return None
    if signing_key.next_path(rt.keyring).exists():
        new = signing_key.prepare_next(rt.keyring)  # reads the one left behind
        if verifier(origin, new.public_key()).key_id == last.new_key_id and last.old_key_id == held.key_id:
            signing_key.install_next(rt.keyring)
            return Rotated(held, verifier(origin, new.public_key()), last.tree_size)
    raise RotationError(f"the recorded hand-overs name key {last.new_key_id}, the keyring holds key {held.key_id}")


def rotate(rt: Runtime) -> Rotated:
    origin = sealing.origin(rt)
    finished = _finish_interrupted(rt, origin)
    if finished is not None:
        return finished
    sealing.seal_all(rt)
    old = signing_key.load(rt.keyring, fresh=True)
    old_v = verifier(origin, old.public_key())
    with rt.sessions.begin() as s:
        if s.get_bind().dialect.name == "postgresql":
            s.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": ADVISORY_LOCK})
        last = s.execute(select(HANDOVERS.c.new_key_id).order_by(HANDOVERS.c.sequence.desc()).limit(1)).scalar()
        if last is not None and last != old_v.key_id:
            raise RotationError(f"another rotation handed the key over to {last} meanwhile")
        new = signing_key.prepare_next(rt.keyring)
        size = s.execute(select(func.max(CHECKPOINTS.c.tree_size))).scalar() or 0
        sequence = (s.execute(select(func.max(HANDOVERS.c.sequence))).scalar() or 0) + 1
        now = datetime.now(UTC)
        new_v = verifier(origin, new.public_key())
        s.execute(insert(HANDOVERS).values(sequence=sequence, tree_size=size, old_key_id=old_v.key_id,
                                           new_key_id=new_v.key_id, statement=handover.make(origin, size, old, new, now),
                                           created_at=now))
    signing_key.install_next(rt.keyring)
    return Rotated(old_v, new_v, size)
