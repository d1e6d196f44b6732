"""The canonical binary form of an audit event: the bytes that become its Merkle leaf.

An external verifier can rebuild it from an export with nothing but this description.

Encoding, version 1 (`nhr-audit-leaf/v1`):

    leaf    = PREFIX || field(1) || ... || field(23) || u32(count) || subject(1) || ... || subject(count)
    PREFIX  = the 18 ASCII bytes "nhr-audit-leaf/v1\\n"
    field   = u32(len(utf8)) || utf8        for a value
            = 0xFFFFFFFF                    for NULL (no bytes follow)
    subject = field of a patient id; subjects sorted by their canonical text, duplicates removed
    u32     = 4-byte big-endian unsigned integer

The 23 fields are the columns of `audit_events`, in exactly the order of `FIELDS` below, each
turned into text as follows:
- UUIDs: lowercase canonical form with hyphens (36 characters);
- `occurred_at`: ISO-8601 in UTC with microseconds and a `Z`, e.g. `2026-11-22T00:50:57.000123Z`
  (a timestamp stored without a zone, as SQLite returns them, is UTC);
- booleans: `true` or `false`;
- `detail`: JSON with sorted keys and no whitespace, `json.dumps(detail, sort_keys=True,
  separators=(",", ":"))` (ASCII-escaped, Python's default) — the one field kept as JSON because
  it is stored as JSON;
- every other column: its text as stored.

The leaf hash is SHA-256(0x00 || leaf) (RFC 9162).

A *quarantined* leaf (an event the sealer sealed without vouching for it: no valid MAC, or dated
before its last checkpoint beyond the grace; see sealer.py) hashes instead

    SHA-256(0x00 || "nhr-audit-quarantined/v1\n" || field(reason) || SHA-256(0x00 || leaf))

so the event's content and the quarantine mark are both fixed by the tree: neither can be
changed, added or removed after sealing. The two prefixes differ, so no leaf can pass as the
other kind. Exports carry each event already in this text
form (`canonical_fields`), so a verifier only has to length-prefix and hash.

Invariants:
- Every column of `audit_events` but `mac` (computed over these bytes, event_mac.py) is covered (a test compares `FIELDS` with the table), so no
  column can be altered without changing the leaf; a new column needs a new version.
- The encoding is injective: length prefixes and the NULL marker make field boundaries and
  NULL-versus-empty unambiguous.
"""

from __future__ import annotations

import json
import struct
import uuid
from datetime import UTC, datetime
from typing import Iterable, Mapping

from security.audit.merkle import leaf_hash as _leaf_hash

PREFIX = b"nhr-audit-leaf/v1\n"
QUARANTINE_PREFIX = b"nhr-audit-quarantined/v1\n"
VERSION = "nhr-audit-leaf/v1"
FIELDS = (
    "id", "occurred_at", "request_id", "client_address", "actor_user_id", "actor_username", "actor_role",
    "actor_scope_level", "actor_scope_code", "actor_province", "actor_district", "action", "resource_type",
    "resource_id", "patient_id", "patient_province", "patient_district", "outcome", "purpose_of_use",
    "break_glass", "break_glass_reason", "outside_capture_scope", "detail",
)
_NULL = b"\xff\xff\xff\xff"
_u32 = struct.Struct(">I").pack


def timestamp(value: datetime) -> str:
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _text(value: object) -> str | None:
    if value is None:
        return None
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, uuid.UUID):
        return str(value)
    if isinstance(value, datetime):
        return timestamp(value)
    if isinstance(value, dict):
        return json.dumps(value, sort_keys=True, separators=(",", ":"))
    if isinstance(value, str):
        return value
    raise TypeError(f"no canonical text for a {type(value).__name__}")


def _uuid_text(value: object) -> str:
    return str(value if isinstance(value, uuid.UUID) else uuid.UUID(str(value)))


def canonical_fields(row: Mapping[str, object]) -> list[str | None]:
    """The 23 column values of an event row as canonical text (None for NULL)."""
    out = [_text(row[name]) for name in FIELDS]
    for i in (0, 4, 14):  # id, actor_user_id, patient_id may arrive as strings
        if out[i] is not None:
            out[i] = _uuid_text(out[i])
    return out


def canonical_subjects(subjects: Iterable[object]) -> list[str]:
    return sorted({_uuid_text(s) for s in subjects})


def _field(text: str | None) -> bytes:
    if text is None:
        return _NULL
    data = text.encode("utf-8")
    return _u32(len(data)) + data


def encode(fields: list[str | None], subjects: list[str]) -> bytes:
    """The leaf bytes from canonical text (see the module docstring)."""
    if len(fields) != len(FIELDS):
        raise ValueError("an event has exactly 23 fields")
    parts = [PREFIX]
    parts.extend(_field(f) for f in fields)
    parts.append(_u32(len(subjects)))
    parts.extend(_field(s) for s in subjects)
    return b"".join(parts)


def event_leaf_hash(row: Mapping[str, object], subjects: Iterable[object] = ()) -> bytes:
    return _leaf_hash(encode(canonical_fields(row), canonical_subjects(subjects)))


def text_leaf_hash(fields: list[str | None], subjects: list[str]) -> bytes:
    """Leaf hash of an event already in canonical text (an export record)."""
    return _leaf_hash(encode(fields, subjects))


def quarantined_leaf_hash(event_hash: bytes, reason: str) -> bytes:
    """The leaf hash of a quarantined event, from its ordinary leaf hash and the reason."""
    return _leaf_hash(QUARANTINE_PREFIX + _field(reason) + event_hash)


def sealed_leaf_hash(event_hash: bytes, quarantine: str | None) -> bytes:
    return event_hash if quarantine is None else quarantined_leaf_hash(event_hash, quarantine)
