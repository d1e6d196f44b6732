"""Field encryption: AES-256-GCM with the ciphertext bound to where it is stored.

Wire format of an encrypted field (bytes):  0x01 | key version (4 bytes, big-endian) | nonce (12) | ciphertext+tag

Invariants:
- The associated data is `nhr/f1|table|column|row id|custodian|version`. A ciphertext copied to
  another row, column, table or custodian, or relabelled with another key version, fails
  authentication and raises `DecryptionError`; it never decrypts to something plausible.
- Nonces are 96 random bits per encryption. At 2^32 encryptions per key the collision risk
  stays below 2^-32 (NIST SP 800-38D); rotate a custodian's field key well before that.
- `None` stays `None` (an absent value is not encrypted); empty strings are encrypted.
"""

from __future__ import annotations

import secrets
import struct

from cryptography.exceptions import InvalidTag

from security.crypto.data_keys import DataKeyStore
from security.crypto.errors import DecryptionError

FORMAT = 1
_HEADER = struct.Struct(">BI")


def _aad(table: str, column: str, row_id: str, custodian: str, version: int) -> bytes:
    return f"nhr/f1|{table}|{column}|{row_id}|{custodian}|{version}".encode()


class FieldCipher:
    def __init__(self, keys: DataKeyStore) -> None:
        self.keys = keys

    def encrypt(self, plaintext: str | None, *, table: str, column: str, row_id: object, custodian: str) -> bytes | None:
        if plaintext is None:
            return None
        key = self.keys.active(custodian, "field")
        nonce = secrets.token_bytes(12)
        aad = _aad(table, column, str(row_id), custodian, key.version)
        return _HEADER.pack(FORMAT, key.version) + nonce + key.aead.encrypt(nonce, plaintext.encode(), aad)

    def decrypt(self, blob: bytes | None, *, table: str, column: str, row_id: object, custodian: str) -> str | None:
        if blob is None:
            return None
        where = f"{table}.{column} row {row_id}"  # an opaque id: operators need it to find the damage
        if len(blob) < _HEADER.size + 12 + 16:
            raise DecryptionError(f"{where}: ciphertext is truncated")
        fmt, version = _HEADER.unpack_from(blob)
        if fmt != FORMAT:
            raise DecryptionError(f"{where}: unknown ciphertext format")
        key = self.keys.get(custodian, "field", version)
        nonce = blob[_HEADER.size:_HEADER.size + 12]
        try:
            data = key.aead.decrypt(nonce, blob[_HEADER.size + 12:], _aad(table, column, str(row_id), custodian, version))
        except InvalidTag:
            raise DecryptionError(f"{where}: ciphertext does not authenticate for this row, column and custodian") from None
        return data.decode()

    def decrypt_row(self, blobs: dict[str, bytes | None], *, table: str, row_id: object,
                    custodian: str) -> dict[str, str | None]:
        """`decrypt` of several columns of one row (column -> blob), for bulk reads: the row id is
        formatted and each key version fetched once per row. Same checks, same errors."""
        rid, keys, out = str(row_id), {}, {}
        for column, blob in blobs.items():
            if blob is None:
                out[column] = None
                continue
            if len(blob) < _HEADER.size + 12 + 16:
                raise DecryptionError(f"{table}.{column} row {rid}: ciphertext is truncated")
            fmt, version = _HEADER.unpack_from(blob)
            if fmt != FORMAT:
                raise DecryptionError(f"{table}.{column} row {rid}: unknown ciphertext format")
            key = keys.get(version)
            if key is None:
                key = keys[version] = self.keys.get(custodian, "field", version)
            try:
                data = key.aead.decrypt(blob[_HEADER.size:_HEADER.size + 12], blob[_HEADER.size + 12:],
                                        _aad(table, column, rid, custodian, version))
            except InvalidTag:
                raise DecryptionError(f"{table}.{column} row {rid}: ciphertext does not authenticate for this row, "
                                      "column and custodian") from None
            out[column] = data.decode()
        return out

    @staticmethod
    def key_version(blob: bytes) -> int:
        return _HEADER.unpack_from(blob)[1]
