"""A witness of the audit log: checks that the registry's latest checkpoint extends the last one
this witness saw, and only then cosigns it (C2SP tlog-cosignature v1).

The witness keeps a small state (the log's origin and key, and the last checkpoint it cosigned)
and reaches the registry through `Source` (the CLI gives it an HTTP client; nothing here knows
HTTP). Per run:
1. fetch the latest checkpoint note; verify the registry's signature with the key the witness
   trusts, following signed key hand-overs (security/audit/handover.py) from that key if the
   checkpoint names another one;
2. refuse a smaller tree than the one already cosigned (the log went backwards);
3. same size: the root must be the same (else a split view); larger: fetch the RFC 9162
   consistency proof from the old size and verify it (an inconsistent proof is a split view);
4. record the new state (before releasing the cosignature), then return the cosigned note.

Invariants: a witness never cosigns two different roots for one size, nor a tree that does not
extend one it cosigned; its state only moves forward.
"""

from __future__ import annotations

import base64
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from security.audit import handover, merkle, note


class WitnessRefused(Exception):
    """The checkpoint cannot be cosigned (bad signature, malformed answer): nothing was signed."""


class SplitView(WitnessRefused):
    """The registry showed this witness a log that does not extend what it cosigned before."""


class Source(Protocol):
    def checkpoint(self) -> str: ...
    def consistency(self, first: int, second: int) -> list[bytes]: ...
    def handovers(self) -> list[str]: ...


@dataclass
class State:
    origin: str
    log_key: str  # vkey of the registry's checkpoint key the witness trusts now
    tree_size: int = 0
    root_hash: str = ""  # base64
    checkpoint: str = ""  # the last cosigned checkpoint text

    @classmethod
    def load(cls, path: Path) -> State:
        d = json.loads(path.read_text(encoding="utf-8"))
        return cls(str(d["origin"]), str(d["log_key"]), int(d["tree_size"]), str(d["root_hash"]), str(d["checkpoint"]))

    def save(self, path: Path) -> None:
        tmp = path.with_name(path.name + ".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(self.__dict__, f, indent=1)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)


@dataclass(frozen=True)
class Result:
    tree_size: int
    previous_size: int
    cosigned_note: str
    key_changed: bool


def _log_signature(text: str, sigs: list[note.Signature], key: note.Verifier) -> note.Signature:
    for s in sigs:
        if note.signature_verifies(text, s, key) is not None:
            return s
    raise WitnessRefused(f"the checkpoint is not signed by the registry key {key.key_id}")


def witness(state: State, source: Source, key: note.SignerKey, now: int) -> tuple[State, Result]:
    """Check and cosign the registry's latest checkpoint; the caller saves the state it returns
    before publishing the cosignature."""
    if key.sig_type != note.COSIGNATURE_V1:
        raise WitnessRefused("the witness key is not a cosignature/v1 key")
    trusted = note.parse_vkey(state.log_key)
    try:
        text, sigs = note.split(source.checkpoint())
        cp = note.parse_checkpoint(text)
    except note.NoteError as exc:
        raise WitnessRefused(f"the registry's checkpoint is malformed: {exc}") from None
    if cp.origin != state.origin:
        raise WitnessRefused(f"the checkpoint is of log {cp.origin}, not {state.origin}")
    log_key, key_changed = trusted, False
    if not any(s.name == trusted.name and s.hash == trusted.hash for s in sigs):
        try:
            chain = handover.chain(state.origin, trusted.public_key, source.handovers())
        except handover.HandoverError as exc:
            raise WitnessRefused(f"the checkpoint is signed by another key and the hand-overs do not lead to it: {exc}") from None
        idx = next(i for i, k in enumerate(chain.keys()) if k.same_key(trusted))
        if idx == len(chain.keys()) - 1:
            raise WitnessRefused(f"the checkpoint is not signed by the registry key {trusted.key_id}")
        log_key, key_changed = chain.key_for(cp.tree_size), True
        if chain.keys().index(log_key) < idx:
            raise WitnessRefused("the checkpoint is signed by a key older than the one this witness trusts")
    log_sig = _log_signature(text, sigs, log_key)
    old_root = base64.b64decode(state.root_hash) if state.root_hash else merkle.EMPTY_ROOT
    if cp.tree_size < state.tree_size:
        raise SplitView(f"the log went backwards: this witness cosigned size {state.tree_size}, "
                        f"the registry now shows size {cp.tree_size}")
    if cp.tree_size == state.tree_size and state.tree_size > 0:
        if cp.root_hash != old_root:
            raise SplitView(f"split view: a different root for size {cp.tree_size}, which this witness already cosigned")
    elif state.tree_size > 0:
        try:
            proof = source.consistency(state.tree_size, cp.tree_size)
            merkle.verify_consistency(state.tree_size, cp.tree_size, old_root, cp.root_hash, proof)
        except merkle.ProofError as exc:
            raise SplitView(f"split view: size {cp.tree_size} does not extend size {state.tree_size} "
                            f"that this witness cosigned ({exc})") from None
    cosig = note.sign(text, key, timestamp=now)
    new = State(state.origin, log_key.vkey(), cp.tree_size, base64.b64encode(cp.root_hash).decode(), text)
    return new, Result(cp.tree_size, state.tree_size, note.format_note(text, [log_sig, cosig]), key_changed)
