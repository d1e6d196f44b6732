"""Key-encryption keys (KEKs): one per custodian province, kept outside the database.

Invariants:
- A KEK never enters the database. The default backend is a directory of 32-byte random keys
  (mode 0600), generated on first use in development; `create_missing=False` (production)
  refuses to invent a key, so a mis-mounted key directory fails loudly instead of silently
  starting a new, empty custody.
- The KEK only wraps data keys (see `data_keys.py`); it never encrypts a field directly.
- The audit log's Ed25519 checkpoint-signing key lives here too (`signing/audit-log.ed25519.pem`,
  PKCS#8, 0600), generated on first use under the same rule; only its public key is exported.
  The sealer uses it; no request handler ever does.
- Named secrets (`secret(name)`) exist only under a name listed in `SECRET_NAMES`: `nhr keys
  init` provisions exactly that list, so a new use of a secret cannot reach production without
  being provisioned there (it fails in every environment, tests included, until it is listed).
- KEKs have generations (`kek_version`): generation 1 is `kek/<custodian>.key`, a later one
  `kek/<custodian>.v<N>.key`. `nhr keys rotate-kek` creates the next generation and re-wraps the
  data keys under it (the version each data key is wrapped under is stored beside it).
- A PKCS#11 HSM implements the same methods (`security/crypto/hsm.py`) without ever exporting
  the KEK; `security/crypto/kek_backends.py` chooses the backend per custodian.
"""

from __future__ import annotations

import base64
import os
import re
import secrets
import threading
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from security.crypto.errors import DecryptionError, KeyUnavailable

# Every named secret, and what it keys. `nhr keys init` / `nhr init` provision each of them.
SECRET_NAMES = {
    "token-signing": "HS256 access tokens (security/tokens.py)",
    "lock-key": "advisory-lock ids of identifiers being registered (registry/patients/repository.py)",
    "citizen-throttle": "the citizen login throttle's keys (registry/citizens/service.py)",
    "sync-receipts": "MACs of applied batch-sync items (registry/sync/batch.py)",
    "idempotency-responses": "encryption of stored Idempotency-Key responses (registry/sync/idempotency.py)",
    "audit-events": "MACs of audit events as the registry writes them (security/audit/event_mac.py)",
    "access-code-pool": "sealing of the access codes made ahead of registration (registry/citizens/code_pool.py)",
    "linkage-secret": "the national key of cross-province Bloom-filter linkage encodings (registry/linkage/bloom.py); provinces' encoders only",
}

_CUSTODIAN = re.compile(r"^[A-Z]{2}(-[A-Z0-9]{1,8})*$")
_WRAP_AAD = b"nhr/kek-wrap/v1|"


def _write_secret(path: Path, data: bytes) -> None:
    """Create `path` with mode 0600 atomically; never overwrite an existing key."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)


class FileKeyring:
    """KEKs and small secrets in a directory: `kek/<custodian>.key`, `secrets/<name>.key`."""

    def __init__(self, directory: Path, *, create_missing: bool) -> None:
        self.directory = Path(directory)
        self.create_missing = create_missing
        if create_missing:
            self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        self._keks: dict[tuple[str, int], AESGCM] = {}
        self._secrets: dict[str, bytes] = {}
        self._signing: Ed25519PrivateKey | None = None
        self._lock = threading.Lock()

    def _load_or_create(self, path: Path, what: str) -> bytes:
        try:
            return base64.b64decode(path.read_bytes().strip(), validate=True)
        except FileNotFoundError:
            if not self.create_missing:
                raise KeyUnavailable(f"{what} is missing from the keyring") from None
        self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        try:
            _write_secret(path, base64.b64encode(secrets.token_bytes(32)) + b"\n")
        except FileExistsError:  # another process created it first: use theirs
            pass
        return base64.b64decode(path.read_bytes().strip(), validate=True)

    def _kek_path(self, custodian: str, kek_version: int) -> Path:
        if not _CUSTODIAN.match(custodian):
            raise KeyUnavailable("custodian code is not valid")
        return self.directory / "kek" / (f"{custodian}.key" if kek_version == 1 else f"{custodian}.v{kek_version}.key")

    def _kek(self, custodian: str, kek_version: int = 1) -> AESGCM:
        kek = self._keks.get((custodian, kek_version))
        if kek is None:
            path = self._kek_path(custodian, kek_version)
            with self._lock:
                if kek_version == 1:
                    raw = self._load_or_create(path, f"KEK of {custodian}")
                else:  # a later generation exists only once `new_kek_version` made it
                    try:
                        raw = base64.b64decode(path.read_bytes().strip(), validate=True)
                    except FileNotFoundError:
                        raise KeyUnavailable(f"KEK v{kek_version} of {custodian} is missing from the keyring") from None
                kek = self._keks.setdefault((custodian, kek_version), AESGCM(raw))
        return kek

    def wrap(self, custodian: str, label: str, key: bytes, kek_version: int = 1) -> bytes:
        """Encrypt a data key under the custodian's KEK; `label` is bound as associated data."""
        nonce = secrets.token_bytes(12)
        return nonce + self._kek(custodian, kek_version).encrypt(nonce, key, _WRAP_AAD + f"{custodian}|{label}".encode())

    def unwrap(self, custodian: str, label: str, wrapped: bytes, kek_version: int = 1) -> bytes:
        try:
            return self._kek(custodian, kek_version).decrypt(wrapped[:12], wrapped[12:], _WRAP_AAD + f"{custodian}|{label}".encode())
        except KeyUnavailable:
            raise
        except Exception:
            raise DecryptionError(f"data key {label} of {custodian} does not unwrap under its KEK") from None

    def new_kek_version(self, custodian: str) -> int:
        """Create the next KEK generation of `custodian` (an explicit operator step, so also in production)."""
        version = max(self.kek_versions(custodian), default=1) + 1
        _write_secret(self._kek_path(custodian, version), base64.b64encode(secrets.token_bytes(32)) + b"\n")
        return version

    def kek_versions(self, custodian: str) -> list[int]:
        folder = self.directory / "kek"
        found = [1] if (folder / f"{custodian}.key").exists() else []
        for p in folder.glob(f"{custodian}.v*.key") if folder.is_dir() else []:
            if (n := p.name[len(custodian) + 2:-4]).isdigit():
                found.append(int(n))
        return sorted(found)

    def destroy_kek(self, custodian: str, kek_version: int) -> None:
        """Delete one KEK generation (after every data key was re-wrapped under a newer one)."""
        self._kek_path(custodian, kek_version).unlink(missing_ok=True)
        self._keks.pop((custodian, kek_version), None)

    def describe(self, custodian: str) -> str:
        return "file"

    def secret(self, name: str) -> bytes:
        """A named 32-byte secret (e.g. the token signing key), generated on first use in development."""
        if name not in SECRET_NAMES:
            raise ValueError(f"unregistered secret {name!r}: list it in SECRET_NAMES so that `nhr keys init` provisions it")
        value = self._secrets.get(name)
        if value is None:
            with self._lock:
                value = self._secrets.setdefault(name, self._load_or_create(self.directory / "secrets" / f"{name}.key", f"secret {name}"))
        return value

    def audit_signing_key(self) -> Ed25519PrivateKey:
        """The Ed25519 key that signs audit checkpoints (generated on first use outside production)."""
        if self._signing is None:
            path = self.directory / "signing" / "audit-log.ed25519.pem"
            with self._lock:
                if not path.exists():
                    if not self.create_missing:
                        raise KeyUnavailable("the audit signing key is missing from the keyring")
                    pem = Ed25519PrivateKey.generate().private_bytes(
                        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
                    try:
                        _write_secret(path, pem)
                    except FileExistsError:  # another process created it first: use theirs
                        pass
                key = serialization.load_pem_private_key(path.read_bytes(), password=None)
                if not isinstance(key, Ed25519PrivateKey):
                    raise KeyUnavailable("the audit signing key is not an Ed25519 key")
                self._signing = key
        return self._signing

    def audit_public_key_pem(self) -> bytes:
        """The checkpoint verification key, SubjectPublicKeyInfo PEM (safe to publish)."""
        return self.audit_signing_key().public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)

    def readable(self) -> bool:
        return self.directory.is_dir() and os.access(self.directory, os.R_OK)

    def pem_file(self, relative: str, make, *, create: bool | None = None) -> bytes:
        """A PEM file under the keyring (certificate issuers' keys and X.509 certificates, issue 6):
        read it or, outside production, create it once (0600, never overwritten) from `make()`.
        If another process created it first, theirs wins and is returned. `create=True` is for
        explicit operator commands (importing a trusted certificate), which may write in production."""
        path = self.directory / "certificates" / relative
        if ".." in Path(relative).parts:
            raise KeyUnavailable("keyring paths stay inside the keyring")
        with self._lock:
            if not path.exists():
                if not (self.create_missing if create is None else create):
                    raise KeyUnavailable(f"{relative} is missing from the keyring")
                try:
                    _write_secret(path, make())
                except FileExistsError:
                    pass
            return path.read_bytes()

    def pem_files(self, prefix: str) -> list[str]:
        """Names of the PEM files under the keyring's certificates/ directory starting with `prefix`."""
        folder = self.directory / "certificates"
        return sorted(p.name for p in folder.glob(f"{prefix}*.pem")) if folder.is_dir() else []
