"""Checking a proof the API served, offline, with only the log's public key.

An auditor (or anyone the registry answers to) saves the JSON of
`GET /api/v1/audit/events/{id}/proof` or `GET /api/v1/audit/consistency` and checks it here:

- inclusion: the checkpoint's Ed25519 signature verifies under the public key; its size is the
  proof's tree size; the audit path leads from the leaf hash at that index to the signed root.
  Given the event itself (a line of `nhr audit export`), the leaf hash is recomputed from the
  event's canonical encoding, so the proof is tied to the event's content, not just a hash.
- consistency: both checkpoints verify; the proof shows the second tree extends the first.

Nothing here trusts the server: every statement is checked against signed data.
"""

from __future__ import annotations

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from security.audit import leaf, merkle
from security.audit.checkpoint import Checkpoint


class ProofRejected(ValueError):
    """The proof does not establish what it claims; the message says which step failed."""


def _signed(doc: dict, public_key: Ed25519PublicKey, what: str) -> Checkpoint:
    try:
        cp = Checkpoint.from_json(doc)
        origin = str(doc["origin"])
    except (KeyError, ValueError, TypeError) as exc:
        raise ProofRejected(f"{what}: malformed checkpoint ({type(exc).__name__})") from None
    if not cp.verifies(origin, public_key):
        raise ProofRejected(f"{what}: signature does not verify under the given public key")
    return cp


def _hexes(values, what: str) -> list[bytes]:
    try:
        return [bytes.fromhex(v) for v in values]
    except (ValueError, TypeError):
        raise ProofRejected(f"{what}: not a list of hex hashes") from None


def check_inclusion(doc: dict, public_key: Ed25519PublicKey, event: dict | None = None) -> str:
    cp = _signed(doc.get("checkpoint") or {}, public_key, "checkpoint")
    try:
        index, size, leaf_hash = int(doc["leaf_index"]), int(doc["tree_size"]), bytes.fromhex(doc["leaf_hash"])
    except (KeyError, ValueError, TypeError):
        raise ProofRejected("proof: leaf_index, tree_size and leaf_hash are required") from None
    if size != cp.tree_size:
        raise ProofRejected(f"proof is for tree size {size} but the checkpoint signs size {cp.tree_size}")
    if event is not None:  # an event record of `nhr audit export`: {"event": {field: text}, "subjects": [...]}
        content = event.get("event") or {}
        fields = [content.get(f) for f in leaf.FIELDS]
        if str(content.get("id")) != str(doc.get("event_id")):
            raise ProofRejected("the event given is not the event the proof is about")
        quarantine = doc.get("quarantine")
        if quarantine is not None and not isinstance(quarantine, str):
            raise ProofRejected("proof: quarantine must be a reason or null")
        if leaf.sealed_leaf_hash(leaf.text_leaf_hash(fields, event.get("subjects", [])), quarantine) != leaf_hash:
            raise ProofRejected("the event's content does not hash to the proof's leaf hash")
    try:
        merkle.verify_inclusion(index, size, leaf_hash, _hexes(doc.get("audit_path", []), "audit_path"), cp.root_hash)
    except merkle.ProofError as exc:
        raise ProofRejected(f"inclusion: {exc}") from None
    tied = " and the event's content matches it" if event is not None else ""
    if doc.get("quarantine") is not None:
        tied += f"; QUARANTINED ({doc['quarantine']}): sealed without the registry vouching for it"
    return f"event {doc.get('event_id')} is leaf {index} of the log of {size} events signed at {doc['checkpoint']['signed_at']}{tied}"


def check_consistency(doc: dict, public_key: Ed25519PublicKey) -> str:
    first = _signed(doc.get("first_checkpoint") or {}, public_key, "first checkpoint")
    second = _signed(doc.get("second_checkpoint") or {}, public_key, "second checkpoint")
    try:
        merkle.verify_consistency(first.tree_size, second.tree_size, first.root_hash, second.root_hash,
                                  _hexes(doc.get("proof", []), "proof"))
    except merkle.ProofError as exc:
        raise ProofRejected(f"consistency: {exc}") from None
    return f"the log of {second.tree_size} events extends the log of {first.tree_size} events: only appended to"
