"""Patient access codes: format, generation and normalisation.

A code is 10 random characters from a 31-character alphabet without look-alikes (no 0/O, 1/I/L)
plus one check character (weighted modulo 31), written in groups: `K7Q4-M9PX-2RC`. That is
10 x log2(31) = 49.5 bits of entropy; the check character catches every single mistyped
character and every swap of neighbours before anything is hashed or counted against a code.
Input is forgiving: case, spaces and hyphens do not matter.
"""

from __future__ import annotations

import math
import secrets

ALPHABET = "23456789ABCDEFGHJKMNPQRSTUVWXYZ"
RANDOM_CHARS = 10
LENGTH = RANDOM_CHARS + 1
ENTROPY_BITS = RANDOM_CHARS * math.log2(len(ALPHABET))
_INDEX = {c: i for i, c in enumerate(ALPHABET)}


def check_character(body: str) -> str:
    """Weighted sum modulo the prime 31 (weights 2..11 on the body, 1 on the check character),
    so every single substitution and every swap of neighbours changes the sum."""
    n = len(ALPHABET)
    total = sum((i + 2) * _INDEX[ch] for i, ch in enumerate(body))
    return ALPHABET[-total % n]


def generate() -> str:
    """A new code, formatted for printing (`XXXX-XXXX-XXX`)."""
    body = "".join(secrets.choice(ALPHABET) for _ in range(RANDOM_CHARS))
    return display(body + check_character(body))


def display(compact: str) -> str:
    return f"{compact[:4]}-{compact[4:8]}-{compact[8:]}"


def normalise(value: str | None) -> str | None:
    """The compact code (what is hashed), or None if it cannot be a code (wrong length, a
    character outside the alphabet, a failed check character)."""
    if not value:
        return None
    compact = value.replace("-", "").replace(" ", "").upper()
    if len(compact) != LENGTH or any(c not in _INDEX for c in compact):
        return None
    return compact if check_character(compact[:-1]) == compact[-1] else None


def issue(hasher) -> tuple[str, str]:
    """(the code to show once, its argon2id hash to store)."""
    code = generate()
    return code, hasher.hash(normalise(code))
