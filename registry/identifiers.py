"""Identifier rules: the registry's own health ID (Verhoeff check digit) and Pakistani CNIC/B-form.

- Health ID: 11 random digits + 1 Verhoeff check digit, written `XXXX-XXXX-XXXX`. Verhoeff
  catches every single-digit error and every adjacent transposition, the two mistakes a
  vaccinator typing from a card makes. The digits carry no meaning (no province, no birth date).
- CNIC and B-form (NADRA): 13 digits written `XXXXX-XXXXXXX-X`. Validated for format only;
  nothing is inferred from the digits.
"""

from __future__ import annotations

import re
import secrets

# Verhoeff tables (dihedral group D5).
_D = [
    [0, 1, 2, 3, 4, 5, 6, 7, 8, 9], [1, 2, 3, 4, 0, 6, 7, 8, 9, 5], [2, 3, 4, 0, 1, 7, 8, 9, 5, 6],
    [3, 4, 0, 1, 2, 8, 9, 5, 6, 7], [4, 0, 1, 2, 3, 9, 5, 6, 7, 8], [5, 9, 8, 7, 6, 0, 4, 3, 2, 1],
    [6, 5, 9, 8, 7, 1, 0, 4, 3, 2], [7, 6, 5, 9, 8, 2, 1, 0, 4, 3], [8, 7, 6, 5, 9, 3, 2, 1, 0, 4],
    [9, 8, 7, 6, 5, 4, 3, 2, 1, 0],
]
_P = [
    [0, 1, 2, 3, 4, 5, 6, 7, 8, 9], [1, 5, 7, 6, 2, 8, 3, 0, 9, 4], [5, 8, 0, 3, 7, 9, 6, 1, 4, 2],
    [8, 9, 1, 6, 0, 4, 3, 5, 2, 7], [9, 4, 5, 3, 1, 2, 6, 8, 7, 0], [4, 2, 8, 6, 5, 7, 3, 9, 0, 1],
    [2, 7, 9, 3, 8, 0, 6, 4, 1, 5], [7, 0, 4, 6, 9, 1, 3, 2, 5, 8],
]
_INV = [0, 4, 3, 2, 1, 5, 6, 7, 8, 9]

HEALTH_ID_SYSTEM = "nhr"
BFORM_SYSTEM = "bform"
CNIC_SYSTEM = "cnic"
SYSTEMS = (HEALTH_ID_SYSTEM, BFORM_SYSTEM, CNIC_SYSTEM)

_NADRA = re.compile(r"^\d{5}-?\d{7}-?\d$")
_HEALTH_ID = re.compile(r"^\d{4}-?\d{4}-?\d{4}$")


def verhoeff_check_digit(digits: str) -> str:
    c = 0
    for i, ch in enumerate(reversed(digits)):
        c = _D[c][_P[(i + 1) % 8][int(ch)]]
    return str(_INV[c])


def verhoeff_valid(digits: str) -> bool:
    c = 0
    for i, ch in enumerate(reversed(digits)):
        c = _D[c][_P[i % 8][int(ch)]]
    return c == 0


def new_health_id() -> str:
    body = "".join(str(secrets.randbelow(10)) for _ in range(11))
    return format_health_id(body + verhoeff_check_digit(body))


def format_health_id(digits: str) -> str:
    return f"{digits[0:4]}-{digits[4:8]}-{digits[8:12]}"


def normalise(system: str, value: str) -> str:
    """Canonical form used for blind indexes and comparison. Raises ValueError on bad format."""
    value = value.strip()
    if system in (BFORM_SYSTEM, CNIC_SYSTEM):
        if not _NADRA.match(value):
            raise ValueError("must be 13 digits written XXXXX-XXXXXXX-X")
        return value.replace("-", "")
    if system == HEALTH_ID_SYSTEM:
        if not _HEALTH_ID.match(value):
            raise ValueError("must be 12 digits written XXXX-XXXX-XXXX")
        digits = value.replace("-", "")
        if not verhoeff_valid(digits):
            raise ValueError("check digit does not match: the health ID was mistyped")
        return digits
    raise ValueError(f"unknown identifier system; expected one of {', '.join(SYSTEMS)}")


def format_nadra(digits: str) -> str:
    return f"{digits[0:5]}-{digits[5:12]}-{digits[12]}"


def display(system: str, normalised: str) -> str:
    if system == HEALTH_ID_SYSTEM:
        return format_health_id(normalised)
    return format_nadra(normalised)
