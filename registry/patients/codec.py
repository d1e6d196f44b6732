"""Encrypting a patient into a row and decrypting a row into a `PatientView`.

Every encrypted column uses its own column name in the associated data, so a value moved to
another column (or row, or custodian) fails to decrypt.
"""

from __future__ import annotations

import uuid

from registry import identifiers
from registry.patients.schemas import Guardian, PatientMatch, PatientView, display_name
from security.crypto.blind_index import BlindIndexer
from security.crypto.fields import FieldCipher

TABLE = "patients"
ENCRYPTED = ("given_name", "family_name", "guardian_name", "phone", "address", "health_id", "bform", "cnic", "guardian_cnic")
# column -> (identifier system, use) for the blind index
INDEXED = {"health_id": identifiers.HEALTH_ID_SYSTEM, "bform": identifiers.BFORM_SYSTEM,
           "cnic": identifiers.CNIC_SYSTEM, "guardian_cnic": identifiers.CNIC_SYSTEM}


def encrypt_fields(cipher: FieldCipher, custodian: str, row_id: uuid.UUID, plain: dict) -> dict:
    """`plain` maps field name -> plaintext (or None); returns `{field}_ct` -> ciphertext."""
    return {
        f"{name}_ct": cipher.encrypt(value, table=TABLE, column=f"{name}_ct", row_id=row_id, custodian=custodian)
        for name, value in plain.items()
    }


def index_rows(indexer: BlindIndexer, custodian: str, row_id: uuid.UUID, plain: dict) -> list[dict]:
    rows = []
    for column, system in INDEXED.items():
        value = plain.get(column)
        if value:
            norm = identifiers.normalise(system, value)
            rows.append({"patient_id": row_id, "column": column, "system": system, "custodian": custodian,
                         "bidx": indexer.compute(custodian, system, norm)})
    return rows


def decrypt_column(cipher: FieldCipher, row, name: str) -> str | None:
    return cipher.decrypt(getattr(row, f"{name}_ct"), table=TABLE, column=f"{name}_ct", row_id=row.id, custodian=row.custodian)


def decrypt_columns(cipher: FieldCipher, row, names: tuple[str, ...]) -> dict[str, str | None]:
    """`decrypt_column` for several fields of one row at once (bulk reads: batch deduplication)."""
    plain = cipher.decrypt_row({f"{n}_ct": getattr(row, f"{n}_ct") for n in names}, table=TABLE, row_id=row.id,
                               custodian=row.custodian)
    return {n: plain[f"{n}_ct"] for n in names}


def to_view(cipher: FieldCipher, row) -> PatientView:
    d = {name: decrypt_column(cipher, row, name) for name in ENCRYPTED}
    guardian = None
    if d["guardian_name"] or d["guardian_cnic"] or row.guardian_relationship:
        guardian = Guardian.model_construct(name=d["guardian_name"], relationship=row.guardian_relationship, cnic=d["guardian_cnic"])
    unnamed = bool(getattr(row, "unnamed", False))
    return PatientView.model_construct(
        id=row.id, health_id=d["health_id"], given_name=d["given_name"], family_name=d["family_name"], unnamed=unnamed,
        display_name=display_name(d["given_name"], d["family_name"], d["guardian_name"], unnamed),
        birth_facility=getattr(row, "birth_facility", None),
        sex=row.sex, birth_date=row.birth_date, bform=d["bform"], cnic=d["cnic"], guardian=guardian,
        phone=d["phone"], address=d["address"], province=row.province, district=row.district,
        home_facility=row.home_facility, custodian=row.custodian, version=row.version,
        created_at=row.created_at, updated_at=row.updated_at, merged_into=getattr(row, "merged_into", None),
    )


SEARCH_FIELDS = ("given_name", "family_name", "guardian_name", "health_id")


def to_match(cipher: FieldCipher, row, *, full: bool) -> PatientMatch:
    """A search result: the full record for capture scope, identity confirmation otherwise.
    Withheld fields are not even decrypted."""
    if full:
        return PatientMatch.model_construct(access="capture", **to_view(cipher, row).__dict__)
    d = {name: decrypt_column(cipher, row, name) for name in SEARCH_FIELDS}
    guardian = Guardian.model_construct(name=d["guardian_name"], relationship=row.guardian_relationship, cnic=None) \
        if d["guardian_name"] or row.guardian_relationship else None
    unnamed = bool(getattr(row, "unnamed", False))
    return PatientMatch.model_construct(
        access="search", id=row.id, health_id=d["health_id"], given_name=d["given_name"], family_name=d["family_name"],
        unnamed=unnamed, display_name=display_name(d["given_name"], d["family_name"], d["guardian_name"], unnamed),
        sex=row.sex, birth_date=row.birth_date, guardian=guardian, province=row.province, district=row.district,
        home_facility=row.home_facility, bform=None, cnic=None, phone=None, address=None, custodian=None, version=None,
    )
