"""C2SP signed notes (https://c2sp.org/signed-note), checkpoints (https://c2sp.org/tlog-checkpoint)
and witness cosignatures (https://c2sp.org/tlog-cosignature, cosignature/v1), Ed25519 only.

A signed note is a text (lines ending in newline), a blank line, and one or more signature lines
`— <key name> <base64(4-byte key hash || signature)>`. The key hash is
SHA-256(key name || 0x0A || signature type || public key)[:4]; type 0x01 is a plain Ed25519 note
signature over the text, type 0x04 a cosignature: 8-byte big-endian Unix seconds followed by an
Ed25519 signature over "cosignature/v1\\ntime <seconds>\\n" || text. A verifier key ("vkey") is
`<name>+<hex key hash>+<base64(type || public key)>`; a signer key (as golang.org/x/mod/sumdb/note
writes them) is `PRIVATE+KEY+<name>+<hex key hash>+<base64(type || seed)>`.

Invariants:
- Nothing is trusted before its signature verifies under a key the caller names; an unknown key
  hash is skipped, never an error of its own, so a note may carry signatures of other parties.
- Parsing is strict where it matters for signatures (exact bytes, one blank-line separator, text
  ending in newline) and errors say what is malformed, never echo the note.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
from dataclasses import dataclass

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

ED25519 = 0x01
COSIGNATURE_V1 = 0x04
DASH = "\u2014"
MAX_SIGNATURES = 100
_NAME = re.compile(r"^[^\s+]+$")


class NoteError(ValueError):
    """A note, key or signature is malformed or does not verify (the message names the part)."""


def _raw(key: Ed25519PublicKey) -> bytes:
    return key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def check_name(name: str) -> str:
    if not name or not _NAME.match(name):
        raise NoteError("a key name is non-empty and has no spaces and no '+'")
    return name


def key_hash(name: str, sig_type: int, public_key: Ed25519PublicKey) -> bytes:
    return hashlib.sha256(check_name(name).encode() + b"\n" + bytes([sig_type]) + _raw(public_key)).digest()[:4]


@dataclass(frozen=True)
class Verifier:
    """A party's public key under a name, for one signature type."""

    name: str
    sig_type: int
    public_key: Ed25519PublicKey

    @property
    def hash(self) -> bytes:
        return key_hash(self.name, self.sig_type, self.public_key)

    @property
    def key_id(self) -> str:
        return self.hash.hex()

    def vkey(self) -> str:
        return f"{self.name}+{self.key_id}+{base64.b64encode(bytes([self.sig_type]) + _raw(self.public_key)).decode()}"

    def same_key(self, other: Verifier) -> bool:
        return self.sig_type == other.sig_type and self.name == other.name and _raw(self.public_key) == _raw(other.public_key)


def _b64(text: str, what: str) -> bytes:
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise NoteError(f"{what} is not base64") from None


def parse_vkey(vkey: str) -> Verifier:
    parts = vkey.strip().split("+", 2)
    if len(parts) != 3:
        raise NoteError("a verifier key is name+hash+key")
    name, hexhash, data = parts
    raw = _b64(data, "the verifier key")
    if len(raw) != 33 or raw[0] not in (ED25519, COSIGNATURE_V1):
        raise NoteError("the verifier key is not an Ed25519 (0x01) or cosignature/v1 (0x04) key")
    v = Verifier(check_name(name), raw[0], Ed25519PublicKey.from_public_bytes(raw[1:]))
    if v.key_id != hexhash.lower():
        raise NoteError("the verifier key's hash does not match its name and key")
    return v


@dataclass(frozen=True)
class SignerKey:
    name: str
    sig_type: int
    private_key: Ed25519PrivateKey

    @property
    def verifier(self) -> Verifier:
        return Verifier(self.name, self.sig_type, self.private_key.public_key())

    def encode(self) -> str:
        seed = self.private_key.private_bytes(serialization.Encoding.Raw, serialization.PrivateFormat.Raw,
                                              serialization.NoEncryption())
        return (f"PRIVATE+KEY+{self.name}+{self.verifier.key_id}+"
                f"{base64.b64encode(bytes([self.sig_type]) + seed).decode()}")


def parse_signer_key(skey: str) -> SignerKey:
    parts = skey.strip().split("+", 4)
    if len(parts) != 5 or parts[:2] != ["PRIVATE", "KEY"]:
        raise NoteError("a signer key is PRIVATE+KEY+name+hash+key")
    raw = _b64(parts[4], "the signer key")
    if len(raw) != 33 or raw[0] not in (ED25519, COSIGNATURE_V1):
        raise NoteError("the signer key is not an Ed25519 (0x01) or cosignature/v1 (0x04) key")
    key = SignerKey(check_name(parts[2]), raw[0], Ed25519PrivateKey.from_private_bytes(raw[1:]))
    if key.verifier.key_id != parts[3].lower():
        raise NoteError("the signer key's hash does not match its name and key")
    return key


def generate(name: str, sig_type: int) -> SignerKey:
    return SignerKey(check_name(name), sig_type, Ed25519PrivateKey.generate())


# --- notes -------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Signature:
    name: str
    hash: bytes
    data: bytes  # after the 4-byte hash: the signature (0x01) or timestamp || signature (0x04)

    def line(self) -> str:
        return f"{DASH} {self.name} {base64.b64encode(self.hash + self.data).decode()}\n"


def check_text(text: str) -> None:
    if not text.endswith("\n") or "\n\n" in text or text.startswith("\n"):
        raise NoteError("a note's text is non-empty lines, each ending in a newline, no blank line")


def split(note: str) -> tuple[str, list[Signature]]:
    """The text and the signatures of a note (not verified)."""
    i = note.rfind("\n\n")
    if i < 0:
        raise NoteError("a note has its text, a blank line and signature lines")
    text, sigs = note[:i + 1], note[i + 2:]
    check_text(text)
    if not sigs.endswith("\n"):
        raise NoteError("a note ends with a newline")
    out: list[Signature] = []
    for line in sigs[:-1].split("\n"):
        if not line.startswith(DASH + " "):
            raise NoteError("a signature line starts with an em dash and a space")
        name, _, data = line[2:].partition(" ")
        raw = _b64(data, "a signature")
        if len(raw) < 5:
            raise NoteError("a signature is too short")
        out.append(Signature(check_name(name), raw[:4], raw[4:]))
    if not out or len(out) > MAX_SIGNATURES:
        raise NoteError(f"a note has 1 to {MAX_SIGNATURES} signatures")
    return text, out


def _message(sig_type: int, text: str, timestamp: int | None) -> bytes:
    if sig_type == ED25519:
        return text.encode()
    return f"cosignature/v1\ntime {timestamp}\n".encode() + text.encode()


def sign(text: str, key: SignerKey, timestamp: int | None = None) -> Signature:
    """A signature of `text`: a plain note signature (0x01), or a cosignature at `timestamp`
    (Unix seconds, 0x04)."""
    check_text(text)
    if key.sig_type == ED25519:
        return Signature(key.name, key.verifier.hash, key.private_key.sign(_message(ED25519, text, None)))
    if timestamp is None or not 0 <= timestamp < 1 << 63:
        raise NoteError("a cosignature needs a timestamp")
    return Signature(key.name, key.verifier.hash,
                     timestamp.to_bytes(8, "big") + key.private_key.sign(_message(COSIGNATURE_V1, text, timestamp)))


def signature_verifies(text: str, sig: Signature, verifier: Verifier) -> int | None:
    """None unless `sig` is `verifier`'s valid signature of `text`; else 0 for a plain signature,
    the timestamp for a cosignature."""
    if sig.name != verifier.name or sig.hash != verifier.hash:
        return None
    if verifier.sig_type == ED25519:
        body, timestamp = sig.data, 0
    else:
        if len(sig.data) != 72:
            return None
        timestamp, body = int.from_bytes(sig.data[:8], "big"), sig.data[8:]
        if timestamp >= 1 << 63:
            return None
    try:
        verifier.public_key.verify(body, _message(verifier.sig_type, text, timestamp))
    except InvalidSignature:
        return None
    return timestamp


def format_note(text: str, signatures: list[Signature]) -> str:
    check_text(text)
    return text + "\n" + "".join(s.line() for s in signatures)


def open_note(note: str, verifiers: list[Verifier]) -> tuple[str, list[tuple[Verifier, int]]]:
    """The text and the (verifier, timestamp) of every signature that verifies; NoteError if none."""
    text, sigs = split(note)
    good: list[tuple[Verifier, int]] = []
    for s in sigs:
        for v in verifiers:
            t = signature_verifies(text, s, v)
            if t is not None and not any(g.same_key(v) for g, _ in good):
                good.append((v, t))
    if not good:
        raise NoteError("no signature of the note verifies under a known key")
    return text, good


# --- checkpoints -------------------------------------------------------------------------------

@dataclass(frozen=True)
class CheckpointText:
    origin: str
    tree_size: int
    root_hash: bytes
    extensions: tuple[str, ...] = ()

    def text(self) -> str:
        return (f"{self.origin}\n{self.tree_size}\n{base64.b64encode(self.root_hash).decode()}\n"
                + "".join(e + "\n" for e in self.extensions))


def parse_checkpoint(text: str) -> CheckpointText:
    check_text(text)
    lines = text[:-1].split("\n")
    if len(lines) < 3 or not lines[0]:
        raise NoteError("a checkpoint has an origin, a tree size and a root hash")
    if not re.fullmatch(r"0|[1-9][0-9]{0,18}", lines[1]):
        raise NoteError("the checkpoint's tree size is not a decimal number")
    root = _b64(lines[2], "the checkpoint's root hash")
    if len(root) != 32:
        raise NoteError("the checkpoint's root hash is not 32 bytes")
    return CheckpointText(lines[0], int(lines[1]), root, tuple(lines[3:]))
