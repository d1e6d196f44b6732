"""A province's KEK inside a PKCS#11 token (an HSM; SoftHSM2 in tests), through python-pkcs11.

Invariants:
- The KEK is an AES-256 secret key generated inside the token (`CKA_TOKEN`), with
  `CKA_SENSITIVE=true` and `CKA_EXTRACTABLE=false`: its value can never be read or wrapped out
  of the token, by this code or anyone holding the PIN. Reading it raises the library's
  `AttributeSensitive`.
- Data keys are wrapped and unwrapped inside the token with AES-GCM (`CKM_AES_GCM`, 96-bit
  random IV, 128-bit tag) and the same associated data as the file keyring
  (`nhr/kek-wrap/v1|custodian|label`): a wrapped key moved to another custodian or version
  fails to unwrap. The wrapped form is `IV | ciphertext | tag`, as in the file keyring.
- Object label: `nhr-kek-<custodian>-v<N>`, one object per KEK generation. A missing generation
  is created only when the keyring may create keys (development, `nhr keys init`,
  `nhr keys rotate-kek`); otherwise it is `KeyUnavailable`.
- The PIN comes from a file or the environment (`NHR_PKCS11_PIN_FILE`, `NHR_PKCS11_PIN`), never
  from the repository or a command line.
- One session per operation, under a lock: wraps and unwraps happen when a process loads its
  data keys or an operator rotates, never per request.
"""

from __future__ import annotations

import secrets
import threading
from pathlib import Path

import pkcs11
from pkcs11 import Attribute, KeyType, Mechanism, ObjectClass
from pkcs11.mechanisms import GCMParams

from security.crypto.errors import DecryptionError, KeyUnavailable

_WRAP_AAD = b"nhr/kek-wrap/v1|"  # the same binding as the file keyring's
DEFAULT_MODULE = Path("/usr/lib/softhsm/libsofthsm2.so")

# The KEK's template: made in the token, never leaves it, used only to wrap data keys.
KEK_TEMPLATE = {
    Attribute.TOKEN: True,
    Attribute.PRIVATE: True,
    Attribute.SENSITIVE: True,
    Attribute.EXTRACTABLE: False,
    Attribute.ENCRYPT: True,
    Attribute.DECRYPT: True,
    Attribute.WRAP: False,
    Attribute.UNWRAP: False,
}


def kek_label(custodian: str, kek_version: int) -> str:
    return f"nhr-kek-{custodian}-v{kek_version}"


class Pkcs11Kek:
    """KEKs of the custodians routed to one PKCS#11 token."""

    def __init__(self, module: Path, token_label: str, pin: str, *, create_missing: bool) -> None:
        try:
            self._lib = pkcs11.lib(str(module))
            self._token = self._lib.get_token(token_label=token_label)
        except Exception as exc:  # a wrong module path or token label: say which, not a traceback
            raise KeyUnavailable(f"PKCS#11 token {token_label!r} is not available through {module}: {type(exc).__name__}") from None
        self._pin = pin
        self.create_missing = create_missing
        self._lock = threading.Lock()

    def _session(self):
        return self._token.open(user_pin=self._pin, rw=True)

    def _find(self, session, custodian: str, kek_version: int):
        found = list(session.get_objects({Attribute.CLASS: ObjectClass.SECRET_KEY, Attribute.LABEL: kek_label(custodian, kek_version)}))
        return found[0] if found else None

    def _key(self, session, custodian: str, kek_version: int, *, create: bool):
        key = self._find(session, custodian, kek_version)
        if key is None:
            if not create:
                raise KeyUnavailable(f"KEK v{kek_version} of {custodian} is not in the HSM")
            key = session.generate_key(KeyType.AES, 256, label=kek_label(custodian, kek_version), store=True, template=KEK_TEMPLATE)
        return key

    def wrap(self, custodian: str, label: str, key: bytes, kek_version: int = 1) -> bytes:
        iv = secrets.token_bytes(12)
        with self._lock, self._session() as s:
            kek = self._key(s, custodian, kek_version, create=self.create_missing and kek_version == 1)
            return iv + kek.encrypt(key, mechanism=Mechanism.AES_GCM,
                                    mechanism_param=GCMParams(iv, _WRAP_AAD + f"{custodian}|{label}".encode(), 128))

    def unwrap(self, custodian: str, label: str, wrapped: bytes, kek_version: int = 1) -> bytes:
        with self._lock, self._session() as s:
            kek = self._key(s, custodian, kek_version, create=False)
            try:
                return kek.decrypt(wrapped[12:], mechanism=Mechanism.AES_GCM,
                                   mechanism_param=GCMParams(wrapped[:12], _WRAP_AAD + f"{custodian}|{label}".encode(), 128))
            except pkcs11.PKCS11Error:
                raise DecryptionError(f"data key {label} of {custodian} does not unwrap under its KEK in the HSM") from None

    def new_kek_version(self, custodian: str) -> int:
        """Generate the next KEK generation inside the token."""
        with self._lock, self._session() as s:
            version = max(self._versions(s, custodian), default=1) + 1
            self._key(s, custodian, version, create=True)
        return version

    def _versions(self, session, custodian: str) -> list[int]:
        prefix = kek_label(custodian, 0)[:-1]
        out = []
        for obj in session.get_objects({Attribute.CLASS: ObjectClass.SECRET_KEY}):
            name = obj.label or ""
            if name.startswith(prefix) and name[len(prefix):].isdigit():
                out.append(int(name[len(prefix):]))
        return sorted(out)

    def kek_versions(self, custodian: str) -> list[int]:
        with self._lock, self._session() as s:
            return self._versions(s, custodian)

    def kek_object(self, session, custodian: str, kek_version: int = 1):
        """The token's key object (for tests and operators' checks: its value cannot be read)."""
        return self._key(session, custodian, kek_version, create=False)

    def open_session(self):
        return self._session()

    def destroy_kek(self, custodian: str, kek_version: int) -> None:
        with self._lock, self._session() as s:
            key = self._find(s, custodian, kek_version)
            if key is not None:
                key.destroy()

    def describe(self, custodian: str) -> str:
        return "pkcs11"
