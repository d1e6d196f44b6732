"""Tables of offline sync.

Invariants:
- `idempotency_keys` holds one row per (principal, method, path, Idempotency-Key), named only by
  a SHA-256 over those four, so the table shows neither who sent what nor the key itself. The
  stored response (which carries patient data) is AES-256-GCM ciphertext bound to its row.
- A row is `pending` (a claim, committed before the work, owned by `claim_token` until
  `locked_until`) or `done` (the response, written in the same transaction as the data).
- `sync_receipts` remembers what a batch item did, keyed by (kind, record id), with a keyed MAC
  of the item's content (HMAC, not a plain hash: names and birth dates are guessable), so a
  resent item is recognised as a duplicate and a different item with the same id as a conflict.
"""

from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import Integer, LargeBinary, String, Uuid
from sqlalchemy.orm import Mapped, mapped_column

from security.orm import Base, UTCDateTime


class IdempotencyKey(Base):
    __tablename__ = "idempotency_keys"

    key_hash: Mapped[bytes] = mapped_column(LargeBinary(32), primary_key=True)
    fingerprint: Mapped[bytes] = mapped_column(LargeBinary(32))
    state: Mapped[str] = mapped_column(String(8))  # pending | done
    claim_token: Mapped[bytes] = mapped_column(LargeBinary(16))
    locked_until: Mapped[datetime] = mapped_column(UTCDateTime)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime, index=True)
    status_code: Mapped[int | None] = mapped_column(Integer)
    response_ct: Mapped[bytes | None] = mapped_column(LargeBinary)
    # The PostgreSQL backend that holds a pending claim (pid and start time, so a reused pid is not
    # mistaken for it): a claim whose backend is gone is abandoned at once (registry/sync/idempotency.py).
    owner_pid: Mapped[int | None] = mapped_column(Integer)
    owner_started: Mapped[datetime | None] = mapped_column(UTCDateTime)


class SyncReceipt(Base):
    __tablename__ = "sync_receipts"

    kind: Mapped[str] = mapped_column(String(16), primary_key=True)  # patient | dose | dose.void | dose.correct
    record_id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True)
    content_mac: Mapped[bytes] = mapped_column(LargeBinary(32))
    result_id: Mapped[uuid.UUID | None] = mapped_column(Uuid)
    user_id: Mapped[uuid.UUID] = mapped_column(Uuid)
    received_at: Mapped[datetime] = mapped_column(UTCDateTime)
