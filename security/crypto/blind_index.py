"""Blind indexes: find a row by an exact identifier without decrypting the table.

index = first BITS bits of HMAC-SHA256(custodian's index key, system || 0x00 || normalised value)

Choice of BITS (CipherSweet's rule): coincidences C = R / 2^BITS should satisfy 2 <= C < sqrt(R)
at the design size R = 250 million values per identifier system. BITS = 26 gives
C = 250e6 / 67.1e6 ~ 3.7: an attacker holding the database cannot confirm that two rows share an
identifier (each index value is shared by ~4 unrelated people at design size), and a lookup
decrypts a handful of candidates to confirm. Smaller deployments have fewer coincidences; that
is why candidates are always confirmed by decryption, never trusted.

Each custodian has its own index key, so a national lookup computes one index value per
custodian and matches (custodian, value) pairs.
"""

from __future__ import annotations

import hashlib

from security.crypto.data_keys import DataKeyStore

BITS = 26
DESIGN_SIZE = 250_000_000


def expected_coincidences(records: int = DESIGN_SIZE, bits: int = BITS) -> float:
    return records / 2**bits


def _pads(key: bytes) -> tuple:
    """HMAC's two keyed SHA-256 states (RFC 2104: the key XOR ipad and XOR opad, one block each),
    hashed once per key and kept (as the key itself is kept, in this process's memory only)."""
    pads = _PADS.get(key)
    if pads is None:
        block = (hashlib.sha256(key).digest() if len(key) > 64 else key).ljust(64, b"\x00")
        pads = (hashlib.sha256(bytes(b ^ 0x36 for b in block)), hashlib.sha256(bytes(b ^ 0x5C for b in block)))
        if len(_PADS) > 256:  # retired keys: never more than a few per custodian
            _PADS.clear()
        _PADS[key] = pads
    return pads


_PADS: dict[bytes, tuple] = {}


def _index(key: bytes, message: bytes) -> int:
    """The first BITS bits of HMAC-SHA256(key, message), from the key's two padded SHA-256 states
    computed once (`_pads`): the same bytes as hmac.digest(key, message, "sha256"), but each
    value costs two copies and two short hashes instead of a whole HMAC set-up (OpenSSL 3 looks
    the digest up and hashes both pads on every call). The registration check computes ~76 values
    (11 per custodian, 7 custodians); tests/security_tests/test_crypto.py checks the bits."""
    inner, outer = _pads(key)
    h = inner.copy()
    h.update(message)
    o = outer.copy()
    o.update(h.digest())
    return int.from_bytes(o.digest()[:4], "big") >> (32 - BITS)


class BlindIndexer:
    def __init__(self, keys: DataKeyStore) -> None:
        self.keys = keys

    def compute(self, custodian: str, system: str, normalised: str) -> int:
        key = self.keys.active(custodian, "index")
        return _index(key.raw, system.encode() + b"\x00" + normalised.encode())

    def for_all_custodians(self, system: str, normalised: str) -> dict[str, int]:
        """One index value per custodian whose keys this process holds."""
        return {c: self.compute(c, system, normalised) for c in sorted(self.keys.custodians())}

    def for_all_custodians_many(self, system: str, values: list[str]) -> list[tuple[str, str, int]]:
        """(custodian, value, index) for every value and custodian: `for_all_custodians` over
        many values, each custodian's key fetched once (the linkage blocking keys)."""
        out = []
        prefix = system.encode() + b"\x00"
        messages = [(v, prefix + v.encode()) for v in values]
        shift = 32 - BITS
        for c in sorted(self.keys.custodians()):
            inner, outer = _pads(self.keys.active(c, "index").raw)
            for v, m in messages:
                h = inner.copy()
                h.update(m)
                o = outer.copy()
                o.update(h.digest())
                out.append((c, v, int.from_bytes(o.digest()[:4], "big") >> shift))
        return out
