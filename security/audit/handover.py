"""Hand-overs of the audit log's checkpoint-signing key, and the chain of keys they form.

A hand-over statement is a C2SP signed note (security/audit/note.py) whose text is

    nhr-key-handover/v1
    origin <origin>
    size <tree size at the hand-over>
    old <old key's vkey>
    new <new key's vkey>
    time <ISO-8601 UTC>

signed first by the old key (it names its successor) and then by the new key (it holds the private
key it is given). Its first line is not an origin, so a statement can never be read as a checkpoint.

Invariants:
- Checkpoints up to `size` are signed by the old key, checkpoints above it by the new one: a key
  that was handed over can no longer sign a checkpoint that verifies (a stolen retired key cannot
  extend the log).
- A chain is accepted only if every statement is signed by its predecessor's new key and sizes
  never decrease; the verifier's pinned key must be one of the chain's keys.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from security.audit import note
from security.audit.leaf import timestamp

HEADER = "nhr-key-handover/v1"


class HandoverError(ValueError):
    """A statement or a chain of them does not hold (the message says which, no secrets)."""


@dataclass(frozen=True)
class Handover:
    origin: str
    tree_size: int
    old: note.Verifier
    new: note.Verifier
    at: str
    statement: str


def text(origin: str, tree_size: int, old: Ed25519PublicKey, new: Ed25519PublicKey, at: datetime) -> str:
    return (f"{HEADER}\norigin {origin}\nsize {tree_size}\nold {note.Verifier(origin, note.ED25519, old).vkey()}\n"
            f"new {note.Verifier(origin, note.ED25519, new).vkey()}\ntime {timestamp(at)}\n")


def make(origin: str, tree_size: int, old: Ed25519PrivateKey, new: Ed25519PrivateKey, at: datetime) -> str:
    body = text(origin, tree_size, old.public_key(), new.public_key(), at)
    return note.format_note(body, [note.sign(body, note.SignerKey(origin, note.ED25519, k)) for k in (old, new)])


def parse(statement: str, origin: str) -> Handover:
    """A statement whose two signatures verify (by the old and the new key it names)."""
    try:
        body, _ = note.split(statement)
        lines = body[:-1].split("\n")
        fields = dict(line.split(" ", 1) for line in lines[1:])
        if lines[0] != HEADER or set(fields) != {"origin", "size", "old", "new", "time"} or len(lines) != 6:
            raise HandoverError("not a key hand-over statement")
        if fields["origin"] != origin:
            raise HandoverError("the hand-over is for another log")
        old, new = note.parse_vkey(fields["old"]), note.parse_vkey(fields["new"])
        if old.sig_type != note.ED25519 or new.sig_type != note.ED25519 or old.name != origin or new.name != origin:
            raise HandoverError("the hand-over names keys of another kind or log")
        _, good = note.open_note(statement, [old, new])
    except note.NoteError as exc:
        raise HandoverError(f"malformed hand-over statement: {exc}") from None
    except ValueError:
        raise HandoverError("malformed hand-over statement") from None
    signed = {v.key_id for v, _ in good}
    if old.key_id not in signed:
        raise HandoverError(f"the hand-over to key {new.key_id} is not signed by the old key {old.key_id}")
    if new.key_id not in signed:
        raise HandoverError(f"the hand-over to key {new.key_id} is not countersigned by the new key")
    if old.same_key(new):
        raise HandoverError("a hand-over names the same key twice")
    return Handover(origin, int(fields["size"]), old, new, fields["time"], statement)


@dataclass(frozen=True)
class KeyChain:
    """Which key signs a checkpoint of a given size: epochs (after size, key), first key first."""

    epochs: tuple[tuple[int, note.Verifier], ...]

    def key_for(self, tree_size: int) -> note.Verifier:
        key = self.epochs[0][1]
        for after, k in self.epochs[1:]:
            if tree_size > after:
                key = k
        return key

    @property
    def current(self) -> note.Verifier:
        return self.epochs[-1][1]

    def keys(self) -> list[note.Verifier]:
        return [k for _, k in self.epochs]


def chain(origin: str, pinned: Ed25519PublicKey, statements: list[str]) -> KeyChain:
    """The chain of keys from the hand-over statements (in sequence order). `pinned`, the key the
    verifier trusts, must be one of its keys. No statements: the pinned key alone."""
    pin = note.Verifier(origin, note.ED25519, pinned)
    if not statements:
        return KeyChain(((-1, pin),))
    handovers = [parse(s, origin) for s in statements]
    epochs: list[tuple[int, note.Verifier]] = [(-1, handovers[0].old)]
    for h in handovers:
        prev_size, prev_key = epochs[-1]
        if not h.old.same_key(prev_key):
            raise HandoverError(f"hand-over to key {h.new.key_id} is signed by key {h.old.key_id}, "
                                f"not by the key in force ({prev_key.key_id})")
        if h.tree_size < prev_size:
            raise HandoverError(f"hand-over to key {h.new.key_id} goes back to size {h.tree_size}")
        epochs.append((h.tree_size, h.new))
    if not any(k.same_key(pin) for _, k in epochs):
        raise HandoverError(f"the trusted key {pin.key_id} is not in the chain of checkpoint keys")
    return KeyChain(tuple(epochs))
