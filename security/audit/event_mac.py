"""Event MACs: the registry vouches for each audit event it writes, with a key the database never sees.

Why: the Merkle log (sealer.py) proves that nothing changed *after* sealing, but the sealer seals
whatever it finds in `audit_events`. Without a MAC, anyone able to INSERT into the database could
write a false past access (framing an official) and the registry would seal it and certify it
intact. With one, the sealer seals as vouched-for only events the registry's own code wrote.

    mac = HMAC-SHA256(key, "nhr-audit-mac/v1\\n" || leaf)

where `leaf` is the event's canonical bytes (leaf.py: all 23 columns and its subject ids), so a
MAC moved to another event, or an event whose subjects were added later, does not verify.

Invariants:
- The key is the keyring's named secret `audit-events` (keyring.SECRET_NAMES, provisioned by
  `nhr keys init`); it never enters the database. The writer attaches it to the database
  handles it builds (`attach`: the sync session factory's `info`, the async pool), so every
  path that inserts an event (`AuditTrail.record`, the async hot paths, the set-based writers)
  computes the MAC from the row it is about to insert, without each caller passing a key.
- An event written without a MAC (a session without the key) is not rejected at write time: it is
  stored with `mac` NULL and the sealer quarantines it, visibly (sealer.py). A test walks the API
  and asserts that nothing it writes is quarantined.
- Comparison is constant-time (`hmac.compare_digest`).
"""

from __future__ import annotations

import hashlib
import hmac
from typing import Iterable, Mapping

from security.audit import leaf

INFO_KEY = "nhr.audit_event_mac"  # Session.info / sessionmaker(info=...) entry holding the EventMac
SECRET_NAME = "audit-events"
_DOMAIN = b"nhr-audit-mac/v1\n"


class EventMac:
    """Computes and checks event MACs with one key."""

    __slots__ = ("_key",)

    def __init__(self, key: bytes) -> None:
        if len(key) < 32:
            raise ValueError("an event MAC key has at least 32 bytes")
        self._key = key

    def __repr__(self) -> str:  # never the key
        return "EventMac(<key>)"

    def tag_leaf(self, leaf_bytes: bytes) -> bytes:
        return hmac.new(self._key, _DOMAIN + leaf_bytes, hashlib.sha256).digest()

    def tag(self, row: Mapping[str, object], subjects: Iterable[object] = ()) -> bytes:
        """The MAC of an event row (the `audit_events` columns) and its subject patient ids."""
        return self.tag_leaf(leaf.encode(leaf.canonical_fields(row), leaf.canonical_subjects(subjects)))

    def sign(self, row: dict, subjects: Iterable[object] = ()) -> dict:
        """Set `row["mac"]` for the row as it will be inserted; returns the row."""
        row["mac"] = self.tag(row, subjects)
        return row

    def verifies(self, leaf_bytes: bytes, mac: bytes | None) -> bool:
        if mac is None:
            return False
        return hmac.compare_digest(self.tag_leaf(leaf_bytes), bytes(mac))


def of(holder) -> EventMac | None:
    """The EventMac attached to a Session (its `info`), or None."""
    info = getattr(holder, "info", None)
    return info.get(INFO_KEY) if info is not None else None


def sign_rows(holder, rows: list[dict], subjects_of: Mapping | None = None) -> list[dict]:
    """MAC every row with the key attached to `holder` (a Session); rows stay unsigned (mac NULL,
    quarantined by the sealer) if it has none. `subjects_of`: event id -> subject ids."""
    mac = of(holder)
    for row in rows:
        row["mac"] = mac.tag(row, (subjects_of or {}).get(row["id"], ())) if mac is not None else None
    return rows
