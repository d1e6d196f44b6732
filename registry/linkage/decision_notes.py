"""A data steward's optional note on a decision: encrypted under the deciding steward's province's
keys, bound to the candidate row (`link_candidates.note_ct`), decrypted only to show it back to a
steward who may view the pair. Never logged, never in an audit event (which says only whether
there is one)."""

from __future__ import annotations

import uuid

from registry.context import ServiceContext
from security.crypto.errors import CryptoError

WHERE = {"table": "link_candidates", "column": "note_ct"}


def encrypt_note(ctx: ServiceContext, candidate_id: uuid.UUID, text: str | None) -> tuple[bytes, str] | None:
    """(ciphertext, custodian), or None for no note (empty or blank)."""
    text = (text or "").strip()
    if not text:
        return None
    custodian = ctx.principal.scope.province  # a steward is bound to a district or a province: never None
    return ctx.runtime.cipher.encrypt(text, row_id=candidate_id, custodian=custodian, **WHERE), custodian


def read_note(ctx: ServiceContext, cand) -> tuple[str | None, bool]:
    """(note, unreadable): the stored note decrypted; (None, True) when it fails its integrity check
    or the keys of its province are not held here, never a 500."""
    if getattr(cand, "note_ct", None) is None:
        return None, False
    try:
        return ctx.runtime.cipher.decrypt(cand.note_ct, row_id=cand.id, custodian=cand.note_custodian, **WHERE), False
    except CryptoError:
        return None, True
