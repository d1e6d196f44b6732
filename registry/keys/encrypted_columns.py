"""Every column that holds a province's field-key ciphertext, in one place.

Re-encryption (`reencrypt.py`), the per-version counts (`status.py`) and the retirement check
read this list; `tests/test_key_rotation.py` asserts it covers every `*_ct` column of the models,
so a new encrypted column cannot be forgotten (it would keep an old key version alive, or worse,
be left unreadable once that version is retired).

Each entry names the primary key, the column holding the custodian whose keys encrypt the row
(the associated data binds table, column, row id, custodian and version; security/crypto/fields.py)
and the optimistic row-version column, where the table has one.
"""

from __future__ import annotations

from dataclasses import dataclass

from registry.patients import codec


@dataclass(frozen=True, slots=True)
class EncryptedTable:
    table: str
    key: str
    custodian: str
    columns: tuple[str, ...]
    row_version: str | None = None


ENCRYPTED_TABLES: tuple[EncryptedTable, ...] = (
    EncryptedTable("patients", "id", "custodian", tuple(f"{name}_ct" for name in codec.ENCRYPTED), "version"),
    EncryptedTable("immunizations", "id", "custodian",
                   ("status_reason_ct", "override_reason_ct", "performer_text_ct", "location_text_ct",
                    "occurrence_text_ct", "fhir_source_ct", "code_text_ct"), "version"),
    EncryptedTable("adverse_events", "id", "custodian", ("notes_ct",), "version"),
    # append-only except for exactly this re-encryption (migration 0028)
    EncryptedTable("break_glass_reviews", "event_id", "note_custodian", ("note_ct",)),
    # a data steward's decision note, under the deciding steward's province (registry/linkage/decision_notes.py)
    EncryptedTable("link_candidates", "id", "note_custodian", ("note_ct",), "version"),
)

# `*_ct` columns that are NOT under a province's field key, and why.
OTHER_KEYS: dict[tuple[str, str], str] = {
    ("idempotency_keys", "response_ct"): "stored responses, under the named secret `idempotency-responses` "
                                         "(registry/sync/idempotency.py); they expire within a day",
    ("access_code_pool", "code_ct"): "access codes made ahead of registration, under the named secret "
                                      "`access-code-pool` (registry/citizens/code_pool.py); taken within the pool's turnover",
}
