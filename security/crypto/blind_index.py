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

import hmac

from security.crypto.data_keys import DataKeyStore

BITS = 26
DESIGN_SIZE = 250_000_000


def expected_coincidences(records: int = DESIGN_SIZE, bits: int = BITS) -> float:
    return records / 2**bits


def _index(key: bytes, message: bytes) -> int:
    """The first BITS bits of HMAC-SHA256(key, message). `hmac.digest` is the one-shot form
    (OpenSSL's HMAC in one call, no HMAC object): the same bytes as hmac.new(...).digest(), a
    fraction of the cost; the registration check computes ~12 values per custodian."""
    return int.from_bytes(hmac.digest(key, message, "sha256")[:4], "big") >> (32 - BITS)


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
        for c in sorted(self.keys.custodians()):
            key = self.keys.active(c, "index").raw
            prefix = system.encode() + b"\x00"
            out += [(c, v, _index(key, prefix + v.encode())) for v in values]
        return out
