"""Signed checkpoints (tree heads) of the audit log, in the shape of a C2SP signed-note body.

The signed bytes are exactly:

    nhr/<country>\\n
    <tree size, decimal>\\n
    <root hash, standard base64>\\n
    time <signed_at, ISO-8601 UTC with microseconds and Z>\\n

The first three lines are the C2SP tlog-checkpoint body (origin, size, root); the fourth is an
extension line carrying the signing time. The signature is Ed25519 over these bytes. The key id
is the C2SP key hash: hex of the first 4 bytes of SHA-256(origin || 0x0A || 0x01 || public key).

Invariants:
- Only the holder of the keyring's private key can make a checkpoint that verifies; anyone with
  the public key can check one, offline.
- A checkpoint commits to the whole log up to its size: the root hash covers every event's
  canonical bytes (see leaf.py) in position order.
"""

from __future__ import annotations

import base64
import hashlib
from dataclasses import dataclass
from datetime import datetime

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from security.audit.leaf import timestamp


def origin_for(country: str) -> str:
    return f"nhr/{country}"


def body(origin: str, tree_size: int, root_hash: bytes, signed_at: datetime) -> bytes:
    return (f"{origin}\n{tree_size}\n{base64.b64encode(root_hash).decode()}\n"
            f"time {timestamp(signed_at)}\n").encode()


def raw_public_key(key: Ed25519PublicKey) -> bytes:
    return key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def key_id(origin: str, key: Ed25519PublicKey) -> str:
    return hashlib.sha256(origin.encode() + b"\n\x01" + raw_public_key(key)).digest()[:4].hex()


def load_public_key(data: bytes | str) -> Ed25519PublicKey:
    """A public key from PEM (SubjectPublicKeyInfo) or 32 raw bytes / their base64."""
    if isinstance(data, str):
        data = data.encode()
    if b"BEGIN PUBLIC KEY" in data:
        key = serialization.load_pem_public_key(data)
    else:
        raw = data if len(data) == 32 else base64.b64decode(data.strip(), validate=True)
        key = Ed25519PublicKey.from_public_bytes(raw)
    if not isinstance(key, Ed25519PublicKey):
        raise ValueError("the public key is not an Ed25519 key")
    return key


def public_key_pem(key: Ed25519PublicKey) -> str:
    return key.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo).decode()


@dataclass(frozen=True)
class Checkpoint:
    tree_size: int
    root_hash: bytes
    signed_at: datetime
    key_id: str
    signature: bytes

    def verifies(self, origin: str, public_key: Ed25519PublicKey) -> bool:
        try:
            public_key.verify(self.signature, body(origin, self.tree_size, self.root_hash, self.signed_at))
        except InvalidSignature:
            return False
        return True

    def as_json(self) -> dict:
        return {"tree_size": self.tree_size, "root_hash": base64.b64encode(self.root_hash).decode(),
                "signed_at": timestamp(self.signed_at), "key_id": self.key_id,
                "signature": base64.b64encode(self.signature).decode()}

    @classmethod
    def from_json(cls, d: dict) -> Checkpoint:
        return cls(int(d["tree_size"]), base64.b64decode(d["root_hash"], validate=True),
                   datetime.fromisoformat(d["signed_at"].replace("Z", "+00:00")), str(d["key_id"]),
                   base64.b64decode(d["signature"], validate=True))


class Signer:
    """Signs checkpoints for one origin with one Ed25519 private key."""

    def __init__(self, private_key: Ed25519PrivateKey, origin: str) -> None:
        self._key = private_key
        self.origin = origin
        self.public_key = private_key.public_key()
        self.key_id = key_id(origin, self.public_key)

    def sign(self, tree_size: int, root_hash: bytes, signed_at: datetime) -> Checkpoint:
        sig = self._key.sign(body(self.origin, tree_size, root_hash, signed_at))
        return Checkpoint(tree_size, root_hash, signed_at, self.key_id, sig)


def signed_note(origin: str, cp: Checkpoint) -> str:
    """The checkpoint as a C2SP signed note: its body, a blank line and the registry's signature
    line (key name = origin, key hash = the key id). See security/audit/note.py."""
    from security.audit import note

    return note.format_note(body(origin, cp.tree_size, cp.root_hash, cp.signed_at).decode(),
                            [note.Signature(origin, bytes.fromhex(cp.key_id), cp.signature)])


def verifier(origin: str, key: Ed25519PublicKey):
    """The registry's checkpoint key as a C2SP note verifier (vkey: `verifier(...).vkey()`)."""
    from security.audit import note

    return note.Verifier(origin, note.ED25519, key)
