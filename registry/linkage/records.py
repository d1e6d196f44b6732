"""From a patient row (or a registration's input) to the values compared, in memory only.

Matching runs in the custodian's process: a row is decrypted here through the field cipher
(registry/patients/codec.py), prepared (comparisons.prepare) and dropped; nothing decrypted is
stored, logged or returned. Blocking keys for the registration check are keyed hashes
(the custodian's blind-index key, 26 bits): a name's consonant skeleton with a birth date, and
the phone number, so a lookup narrows the candidates without any value in the database.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable
from datetime import date, timedelta

from registry.linkage import comparisons
from registry.patients import codec
from security.crypto.errors import DecryptionError

log = logging.getLogger("nhr.linkage")

COMPARED = ("id", "custodian", "birth_date", "sex", "home_facility", "district", "province", "unnamed")  # clear columns read
_NAMES = ("given_name", "family_name", "guardian_name", "guardian_cnic", "bform", "phone")
ENCRYPTED = tuple(f"{n}_ct" for n in _NAMES)  # the encrypted columns read
# blocking key kind -> the prepared column paired with the birth date
DATED_KEYS = {"gbd": "given_skel", "fbd": "family_skel", "ubd": "guardian_skel"}
PHONE_KEY = "ph"
_NEAR_DAYS = (-3, -2, -1, 1, 2, 3)


def from_row(cipher, row) -> dict:
    """Decrypt a patient row's compared fields and prepare them (with `unique_id`)."""
    plain = codec.decrypt_columns(cipher, row, _NAMES)
    rec = comparisons.prepare(**plain, birth_date=row.birth_date, sex=row.sex, facility=row.home_facility,
                              district=row.district, province=row.province, unnamed=bool(getattr(row, "unnamed", False)))
    rec["unique_id"] = str(row.id)
    return rec


def from_compared(cipher, values) -> dict:
    """`from_row` for a row read as COMPARED + ENCRYPTED, in that order (further columns are
    ignored): by position, one `str` of the id, for bulk reads (batch deduplication)."""
    rid, custodian, birth_date, sex, facility, district, province, unnamed = values[:8]
    uid = str(rid)
    p = cipher.decrypt_row(dict(zip(ENCRYPTED, values[8:8 + len(ENCRYPTED)])), table=codec.TABLE, row_id=uid,
                           custodian=custodian)
    rec = comparisons.prepare(given_name=p["given_name_ct"], family_name=p["family_name_ct"],
                              guardian_name=p["guardian_name_ct"], guardian_cnic=p["guardian_cnic_ct"],
                              bform=p["bform_ct"], phone=p["phone_ct"], birth_date=birth_date, sex=sex,
                              facility=facility, district=district, province=province, unnamed=bool(unnamed))
    rec["unique_id"] = uid
    return rec


def prepared_or_none(cipher, row, prepare: Callable = from_row) -> dict | None:
    """`from_row` (or `prepare`), or None for a record that fails its integrity check (logged by
    table, column and row id only): a batch job skips a damaged record instead of stopping."""
    try:
        return prepare(cipher, row)
    except DecryptionError as exc:
        log.error("linkage: record skipped, integrity failure: %s", exc)
        return None


def from_input(*, given_name, family_name, guardian_name, guardian_cnic, bform, phone, birth_date, sex,
               facility, district, province, unnamed: bool = False) -> dict:
    return comparisons.prepare(given_name=given_name, family_name=family_name, guardian_name=guardian_name,
                               guardian_cnic=guardian_cnic, bform=bform, phone=phone, birth_date=birth_date, sex=sex,
                               facility=facility, district=district, province=province, unnamed=unnamed)


def _system(kind: str) -> str:
    return f"link-{kind}"


def key_rows(indexer, custodian: str, patient_id: uuid.UUID, rec: dict) -> list[dict]:
    """The blocking-key rows of one record, under its custodian's index key."""
    rows = []
    for kind, col in DATED_KEYS.items():
        if rec[col] and rec["bd"]:
            rows.append({"patient_id": patient_id, "kind": kind, "custodian": custodian,
                         "bidx": indexer.compute(custodian, _system(kind), f"{rec[col]}|{rec['bd']}")})
    if rec["phone"]:
        rows.append({"patient_id": patient_id, "kind": PHONE_KEY, "custodian": custodian,
                     "bidx": indexer.compute(custodian, _system(PHONE_KEY), rec["phone"])})
    return rows


def lookup_keys(indexer, rec: dict) -> dict[str, list[tuple[str, int]]]:
    """kind -> [(custodian, bidx)] to look up for a new record, for every custodian whose keys
    we hold: the given name with the birth date, the date with day and month swapped and the days
    around it; the family and guardian names with the birth date and the swapped date; the phone."""
    out: dict[str, list[tuple[str, int]]] = {}
    if rec["bd"]:
        d = date.fromisoformat(rec["bd"])
        exact = [rec["bd"], *([rec["bd_swap"]] if rec["bd_swap"] else [])]
        near = exact + [(d + timedelta(days=k)).isoformat() for k in _NEAR_DAYS]
        for kind, col in DATED_KEYS.items():
            if rec[col]:
                days = near if kind == "gbd" else exact
                out[kind] = [(c, b) for c, _, b in indexer.for_all_custodians_many(_system(kind), [f"{rec[col]}|{x}" for x in days])]
    if rec["phone"]:
        out[PHONE_KEY] = [(c, b) for c, _, b in indexer.for_all_custodians_many(_system(PHONE_KEY), [rec["phone"]])]
    return out
