"""The checkpoint-signing key's file in the keyring, read fresh when it changes, and its rotation.

The key lives at `<keyring>/signing/audit-log.ed25519.pem` (security/crypto/keyring.py creates it
on first use). Rotation writes the successor to `audit-log.ed25519.pem.next` first, then (after
the hand-over statement is committed to the database by the caller) replaces the key with it:
the old private key is gone from the keyring; its public key lives on in the hand-over.

Invariants:
- A process that still holds a handed-over key cannot sign with it: the sealer compares the
  latest hand-over's new key with its own before signing and re-reads this file when they differ
  (`load(..., fresh=True)`).
- A crash between the two steps leaves `.next` beside the key; running the rotation again
  finishes it (the database names which key is current).
"""

from __future__ import annotations

import os
import threading
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from security.crypto.errors import KeyUnavailable

_lock = threading.Lock()
_cache: dict[Path, tuple[tuple[int, int], Ed25519PrivateKey]] = {}


def path(keyring) -> Path:
    return Path(keyring.directory) / "signing" / "audit-log.ed25519.pem"


def next_path(keyring) -> Path:
    return path(keyring).with_name("audit-log.ed25519.pem.next")


def _read(p: Path) -> Ed25519PrivateKey:
    key = serialization.load_pem_private_key(p.read_bytes(), password=None)
    if not isinstance(key, Ed25519PrivateKey):
        raise KeyUnavailable("the audit signing key is not an Ed25519 key")
    return key


def load(keyring, *, fresh: bool = False) -> Ed25519PrivateKey:
    """The current signing key; re-read when the file changed (or `fresh`)."""
    p = path(keyring)
    if not p.exists():
        return keyring.audit_signing_key()  # creates it outside production, refuses in production
    st = p.stat()
    stamp = (st.st_ino, st.st_mtime_ns)
    with _lock:
        hit = _cache.get(p)
        if hit is None or hit[0] != stamp or fresh:
            hit = (stamp, _read(p))
            _cache[p] = hit
        return hit[1]


def prepare_next(keyring) -> Ed25519PrivateKey:
    """The successor key in `.next` (0600), created unless a rotation left one behind."""
    p = next_path(keyring)
    if p.exists():
        return _read(p)
    key = Ed25519PrivateKey.generate()
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    p.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd = os.open(p, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(pem)
        f.flush()
        os.fsync(f.fileno())
    return key


def install_next(keyring) -> None:
    """Replace the key with `.next` (atomic rename); the old private key is gone."""
    os.replace(next_path(keyring), path(keyring))
    with _lock:
        _cache.pop(path(keyring), None)
