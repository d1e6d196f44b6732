"""Which backend holds each province's KEK: the key directory (`file`) or a PKCS#11 token
(`pkcs11`), chosen per custodian by a spec such as `PK-PB=pkcs11,*=file` (NHR_KEY_BACKENDS).

Invariants:
- Every custodian resolves to exactly one backend: its own entry, else `*`, else `file`.
- The router only forwards: the KEK never passes through it (a file KEK stays in the file
  keyring's memory, an HSM KEK in the token).
- The token is opened only if some custodian is routed to it, so a file-only deployment needs no
  PKCS#11 module; a routed custodian whose token is unreachable fails loudly (KeyUnavailable).
"""

from __future__ import annotations

import re
from pathlib import Path

from security.crypto.errors import KeyUnavailable
from security.crypto.keyring import FileKeyring

BACKENDS = ("file", "pkcs11")
_ENTRY = re.compile(r"^(\*|[A-Z]{2}(-[A-Z0-9]{1,8})*)=(file|pkcs11)$")


def parse_spec(spec: str) -> dict[str, str]:
    """`PK-PB=pkcs11,*=file` -> {"PK-PB": "pkcs11", "*": "file"}; ValueError names the bad entry."""
    out: dict[str, str] = {}
    for item in (x.strip() for x in spec.split(",")):
        if not item:
            continue
        if not _ENTRY.match(item):
            raise ValueError(f"{item!r} is not CUSTODIAN=file|pkcs11 (or *=file|pkcs11)")
        custodian, backend = item.split("=")
        if custodian in out:
            raise ValueError(f"{custodian} is listed twice")
        out[custodian] = backend
    return out


def read_pin(pin_file: Path | None, pin: str | None) -> str:
    """The token's user PIN: from a file (first line) or the environment."""
    if pin_file is not None:
        try:
            return pin_file.read_text().splitlines()[0].strip()
        except (OSError, IndexError):
            raise KeyUnavailable("the PKCS#11 PIN file cannot be read") from None
    if pin:
        return pin
    raise KeyUnavailable("a custodian uses the HSM but no PIN is configured (NHR_PKCS11_PIN_FILE or NHR_PKCS11_PIN)")


class KekRouter:
    """The KEK operations of `DataKeyStore`, each sent to the custodian's backend."""

    def __init__(self, files: FileKeyring, spec: str = "*=file", *, pkcs11_module: Path | None = None,
                 token_label: str = "nhr", pin_file: Path | None = None, pin: str | None = None) -> None:
        self.files = files
        self.routes = parse_spec(spec)
        self._hsm = None
        self._hsm_args = (pkcs11_module, token_label, pin_file, pin)
        self.create_missing = files.create_missing

    def backend_name(self, custodian: str) -> str:
        return self.routes.get(custodian) or self.routes.get("*") or "file"

    def _hsm_backend(self):
        if self._hsm is None:
            from security.crypto.hsm import DEFAULT_MODULE, Pkcs11Kek

            module, label, pin_file, pin = self._hsm_args
            self._hsm = Pkcs11Kek(module or DEFAULT_MODULE, label, read_pin(pin_file, pin),
                                  create_missing=self.create_missing)
        return self._hsm

    def backend(self, custodian: str, name: str | None = None):
        """The custodian's configured backend, or the one called `name` (where a data key was wrapped)."""
        return self._hsm_backend() if (name or self.backend_name(custodian)) == "pkcs11" else self.files

    def wrap(self, custodian: str, label: str, key: bytes, kek_version: int = 1) -> bytes:
        return self.backend(custodian).wrap(custodian, label, key, kek_version)

    def unwrap(self, custodian: str, label: str, wrapped: bytes, kek_version: int = 1, backend: str | None = None) -> bytes:
        return self.backend(custodian, backend).unwrap(custodian, label, wrapped, kek_version)

    def current_kek_version(self, custodian: str) -> int:
        return max(self.backend(custodian).kek_versions(custodian), default=1)

    def new_kek_version(self, custodian: str) -> int:
        return self.backend(custodian).new_kek_version(custodian)

    def destroy_kek(self, custodian: str, kek_version: int, backend: str | None = None) -> None:
        self.backend(custodian, backend).destroy_kek(custodian, kek_version)
