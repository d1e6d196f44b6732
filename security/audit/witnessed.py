"""How far a checkpointed log is witnessed: the largest checkpoint that at least k configured
witnesses cosigned (C2SP cosignature/v1 over the checkpoint's exact signed text).

Used by verify.py after every checkpoint's root was recomputed from the events and its signature
checked, so a cosignature here vouches for the events themselves: a log rewritten and re-signed
with the registry's key has other roots, and no witness cosigned those.
"""

from __future__ import annotations

import base64

from sqlalchemy import select
from sqlalchemy.orm import Session

from security.audit import note
from security.audit.checkpoint import Checkpoint, body
from security.audit.models import AuditCosignatureRow, AuditKeyHandoverRow

COSIGNATURES = AuditCosignatureRow.__table__
HANDOVERS = AuditKeyHandoverRow.__table__


class NotWitnessed(Exception):
    """Not enough witnesses cosigned any checkpoint (the message names counts and sizes only)."""


def witnessed_size(origin: str, checkpoints: list[Checkpoint], cosignatures: list[dict], witnesses: list[note.Verifier],
                   k: int) -> int:
    """The largest checkpoint size with at least `k` valid cosignatures by distinct configured keys
    (checkpoints were verified already: their roots are the recomputed ones)."""
    if len(witnesses) < k:
        raise NotWitnessed(f"{k} witnesses are required but only {len(witnesses)} witness keys are configured")
    by_size = {cp.tree_size: cp for cp in checkpoints}
    good: dict[int, set[str]] = {}
    for c in cosignatures:
        cp = by_size.get(int(c["tree_size"]))
        if cp is None:
            continue
        text = body(origin, cp.tree_size, cp.root_hash, cp.signed_at).decode()
        sig = note.Signature(str(c["witness_name"]), bytes.fromhex(str(c["key_id"])), bytes(c["signature"]))
        for w in witnesses:
            if w.sig_type == note.COSIGNATURE_V1 and note.signature_verifies(text, sig, w) is not None:
                good.setdefault(cp.tree_size, set()).add(w.vkey())
    sizes = [size for size, keys in good.items() if len(keys) >= k]
    if not sizes:
        raise NotWitnessed(f"no checkpoint carries {k} valid cosignatures of configured witnesses: the log is not "
                          "the one the witnesses saw (rewritten and re-signed?), or it was never witnessed")
    return max(sizes)


def stored(session: Session) -> tuple[list[str], list[dict]]:
    """The key hand-over statements (in sequence) and the cosignatures in the database."""
    handovers = [r[0] for r in session.execute(select(HANDOVERS.c.statement).order_by(HANDOVERS.c.sequence))]
    cosignatures = [{"tree_size": r.tree_size, "witness_name": r.witness_name, "key_id": r.key_id,
                     "signature": bytes(r.signature)}
                    for r in session.execute(select(COSIGNATURES).order_by(COSIGNATURES.c.id))]
    return handovers, cosignatures


def export_records(handovers: list[str], cosignatures: list[dict], size: int) -> list[dict]:
    """Records of the offline export (verify.py): every hand-over, the cosignatures up to `size`."""
    return ([{"kind": "handover", "statement": h} for h in handovers]
            + [{"kind": "cosignature", **c, "signature": base64.b64encode(c["signature"]).decode()}
               for c in cosignatures if c["tree_size"] <= size])


def cosignature_from_record(rec: dict) -> dict:
    return {"tree_size": int(rec["tree_size"]), "witness_name": str(rec["witness_name"]), "key_id": str(rec["key_id"]),
            "signature": base64.b64decode(rec["signature"], validate=True)}
