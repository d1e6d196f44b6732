"""Idempotency keys: the store behind `Idempotency-Key` on every POST (DESIGN invariant 7).

Invariants:
- A key is scoped to the authenticated principal, the method and the path: the row is named by
  SHA-256(user id, method, path, key), so one user's key never finds another user's response.
- The request's fingerprint is SHA-256 over method, path (with query) and the raw body: the same
  key with another fingerprint is refused (422), whatever state the key is in.
- `claim` runs in its own short transaction, committed before the work (a new key is one
  INSERT ... ON CONFLICT DO NOTHING; only an existing key is read): a second request with
  the key while the first runs sees the claim and is refused (409). A claim is owned by a random
  token; `complete` (the response, written in the data's transaction) and `release` (after a
  failure) act only on the caller's own claim. A claim not completed by `locked_until` is
  abandoned (its worker died) and may be taken over. On PostgreSQL a claim also names the
  backend that made it (pid and start time; the API makes the claim and does the work on one
  connection, api/idempotency.py): once that backend is gone (its worker was killed, its
  connection dropped) the claim is abandoned at once, without waiting for `locked_until`. The
  takeover is safe even if the first request lived on: `complete` checks the claim token, so
  only one of them can commit its data.
- The stored response carries patient data: it is AES-256-GCM ciphertext under a keyring secret,
  with the row name as associated data (a ciphertext moved to another row does not decrypt).
- Keys expire `ttl` after their first use; expired rows are purged on write (a fraction of
  claims run the purge, so concurrent workers do not queue on the same deletes).
"""

from __future__ import annotations

import hashlib
import secrets
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import cbor2
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from sqlalchemy import delete, insert, literal_column, select, text, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from registry.errors import Conflict, InvalidInput
from registry.sync.models import IdempotencyKey
from security.crypto.errors import DecryptionError

KEYS = IdempotencyKey.__table__
PENDING, DONE = "pending", "done"
HEADER = "Idempotency-Key"
SECRET_NAME = "idempotency-responses"
STORED_HEADERS = ("content-type", "etag", "location")
_AAD = b"nhr/idem1|"
PURGE_ONE_IN = 32


@dataclass(frozen=True)
class Claim:
    key_hash: bytes
    token: bytes


@dataclass(frozen=True)
class Stored:
    status: int
    body: bytes
    headers: dict[str, str] = field(default_factory=dict)
    subjects: tuple[uuid.UUID, ...] = ()


def validate_key(key: str) -> None:
    """1-255 printable ASCII characters (an opaque client value: a UUID is the usual choice)."""
    if not 1 <= len(key) <= 255 or not all(" " <= ch <= "~" for ch in key):
        raise InvalidInput("an Idempotency-Key must be 1 to 255 printable ASCII characters", field=HEADER)


def key_hash(user_id: uuid.UUID, method: str, path: str, key: str) -> bytes:
    return hashlib.sha256(b"\x00".join([b"nhr/idem-key1", str(user_id).encode(), method.encode(), path.encode(),
                                        key.encode()])).digest()


def fingerprint(method: str, path: str, body: bytes) -> bytes:
    return hashlib.sha256(b"\x00".join([b"nhr/idem-req1", method.encode(), path.encode(), body])).digest()


def _aead(keyring) -> AESGCM:
    return AESGCM(keyring.secret(SECRET_NAME))


def seal(keyring, kh: bytes, stored: Stored) -> bytes:
    plain = cbor2.dumps({"s": stored.status, "h": stored.headers, "b": stored.body, "p": [s.bytes for s in stored.subjects]})
    nonce = secrets.token_bytes(12)
    return nonce + _aead(keyring).encrypt(nonce, plain, _AAD + kh)


def unseal(keyring, kh: bytes, blob: bytes) -> Stored:
    try:
        plain = _aead(keyring).decrypt(blob[:12], blob[12:], _AAD + kh)
    except InvalidTag:
        raise DecryptionError("idempotency_keys.response_ct: ciphertext does not authenticate for this row") from None
    d = cbor2.loads(plain)
    return Stored(d["s"], d["b"], d["h"], tuple(uuid.UUID(bytes=p) for p in d["p"]))


def purge_expired(session: Session, now: datetime) -> int:
    return session.execute(delete(KEYS).where(KEYS.c.expires_at < now)).rowcount


def claim(session: Session, keyring, kh: bytes, fp: bytes, *, lock_seconds: float, ttl_seconds: float,
          now: datetime | None = None) -> Claim | Stored:
    """Claim the key for this request, or return the stored response to replay.

    Raises InvalidInput (another request used this key) or Conflict (the first request is still
    running). The caller commits right after, before doing the work."""
    now = now or datetime.now(UTC)
    if secrets.randbelow(PURGE_ONE_IN) == 0:
        purge_expired(session, now)
    token = secrets.token_bytes(16)
    locked_until = now + timedelta(seconds=lock_seconds)
    owner = _owner(session)
    fresh = {"key_hash": kh, "fingerprint": fp, "state": PENDING, "claim_token": token, "locked_until": locked_until,
             "created_at": now, "expires_at": now + timedelta(seconds=ttl_seconds), "status_code": None, "response_ct": None,
             **owner}
    if _insert_if_absent(session, fresh):  # the usual case, a new key: one statement
        return Claim(kh, token)
    row = session.execute(select(KEYS).where(KEYS.c.key_hash == kh)).first()
    if row is not None and row.expires_at <= now:
        session.execute(delete(KEYS).where(KEYS.c.key_hash == kh, KEYS.c.expires_at == row.expires_at))
        row = None
    if row is None:
        try:
            with session.begin_nested():
                session.execute(insert(KEYS).values(**fresh))
        except IntegrityError:  # another request inserted it first and is running
            raise Conflict("a request with this Idempotency-Key is still being processed; retry later", field=HEADER) from None
        return Claim(kh, token)
    if row.fingerprint != fp:
        raise InvalidInput("this Idempotency-Key was already used for a different request", field=HEADER)
    if row.state == DONE:
        return unseal(keyring, kh, row.response_ct)
    if row.locked_until > now and owner_alive(session, row.owner_pid, row.owner_started):
        raise Conflict("a request with this Idempotency-Key is still being processed; retry later", field=HEADER)
    taken = session.execute(update(KEYS).where(KEYS.c.key_hash == kh, KEYS.c.state == PENDING,
                                               KEYS.c.claim_token == row.claim_token)
                            .values(claim_token=token, locked_until=locked_until, **owner)).rowcount
    if taken != 1:
        raise Conflict("a request with this Idempotency-Key is still being processed; retry later", field=HEADER)
    return Claim(kh, token)


_BACKEND_START = literal_column("(SELECT backend_start FROM pg_stat_activity WHERE pid = pg_backend_pid())")
_ALIVE = text("SELECT EXISTS (SELECT 1 FROM pg_stat_activity WHERE pid = :pid "
              "AND (backend_start = :started OR backend_start IS NULL))")  # NULL: another role's session, start hidden


def _owner(session: Session) -> dict:
    """The claiming backend, as SQL evaluated by the claim's own statement (PostgreSQL); none on SQLite."""
    if session.get_bind().dialect.name != "postgresql":
        return {"owner_pid": None, "owner_started": None}
    return {"owner_pid": literal_column("pg_backend_pid()"), "owner_started": _BACKEND_START}


def owner_alive(session: Session, pid: int | None, started: datetime | None) -> bool:
    """Whether the backend that made a claim still exists. Unknown owner (SQLite, a claim made before
    owners were recorded): True, and the lock timeout decides."""
    if pid is None or session.get_bind().dialect.name != "postgresql":
        return True
    return bool(session.execute(_ALIVE, {"pid": pid, "started": started}).scalar())


def _insert_if_absent(session: Session, row: dict) -> bool:
    """INSERT ... ON CONFLICT DO NOTHING (PostgreSQL and SQLite): True if the row was inserted.
    A concurrent claim of the same key waits for the other transaction, then inserts nothing."""
    name = session.get_bind().dialect.name
    if name == "postgresql":
        from sqlalchemy.dialects.postgresql import insert as dialect_insert
    elif name == "sqlite":
        from sqlalchemy.dialects.sqlite import insert as dialect_insert
    else:
        return False
    stmt = dialect_insert(KEYS).values(**row).on_conflict_do_nothing(index_elements=["key_hash"]).returning(KEYS.c.key_hash)
    return session.execute(stmt).first() is not None  # (rowcount is not reliable here on every driver)


def complete(session: Session, keyring, claim_: Claim, stored: Stored) -> bool:
    """Store the response on the caller's own claim, in the caller's (the data's) transaction.
    False if the claim was lost (expired and taken over): the caller must not commit its data."""
    return session.execute(
        update(KEYS).where(KEYS.c.key_hash == claim_.key_hash, KEYS.c.claim_token == claim_.token, KEYS.c.state == PENDING)
        .values(state=DONE, status_code=stored.status, response_ct=seal(keyring, claim_.key_hash, stored))
    ).rowcount == 1


def release(session: Session, claim_: Claim) -> None:
    """Give the key back after a failed request, so that a retry runs again."""
    session.execute(delete(KEYS).where(KEYS.c.key_hash == claim_.key_hash, KEYS.c.claim_token == claim_.token,
                                       KEYS.c.state == PENDING))
