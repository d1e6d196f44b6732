"""Versioned data keys, wrapped by their custodian's KEK and stored in the database.

Invariants:
- Two purposes per custodian: `field` keys (AES-256-GCM for encrypted columns) and `index`
  keys (HMAC-SHA256 for blind indexes). A key is never used for the other purpose.
- Only the wrapped form is stored; unwrapped keys live in this process's memory only.
- Exactly one version per (custodian, purpose) is active for new writes; older versions stay
  readable forever, so rotation (adding a version) never fails a read.
- Unwrapped keys and their AESGCM objects are cached per process: the hot path does no KDF,
  no unwrap and no allocation of cipher objects.
- A version this process has not seen (rotated by another process or host) is fetched from
  the database on the miss, at most once a second per missing key, so a rotation elsewhere
  never fails a read here.
- A version is retired (`retire`) only when no row uses it any more (the caller checks, see
  registry/keys/); a retired version is dropped from the cache and refused for decryption, here
  at once and in other processes at their next reload (at most `MAX_AGE` seconds later); it
  can then be deleted. The active version can never be retired. Likewise a rotation elsewhere
  moves this process's new writes to the new version within `MAX_AGE` seconds, which is why
  retirement waits twice that long after the newest version was created.
- Each row records the KEK generation and backend that wrapped it (`kek_version`,
  `kek_backend`), so `rewrap` (KEK rotation, or a move from files to the HSM) can unwrap under
  the old KEK and wrap under the new one in one transaction.
"""

from __future__ import annotations

import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from sqlalchemy import Boolean, Integer, LargeBinary, String, delete, insert, select, text, update
from sqlalchemy.engine import Connection
from sqlalchemy.orm import Mapped, mapped_column

from security.crypto.errors import KeyUnavailable
from security.crypto.kek_backends import KekRouter
from security.crypto.keyring import FileKeyring
from security.orm import Base, UTCDateTime

PURPOSES = ("field", "index")


class DataKeyRow(Base):
    __tablename__ = "data_keys"

    custodian: Mapped[str] = mapped_column(String(32), primary_key=True)
    purpose: Mapped[str] = mapped_column(String(8), primary_key=True)
    version: Mapped[int] = mapped_column(Integer, primary_key=True)
    wrapped_key: Mapped[bytes] = mapped_column(LargeBinary)
    active: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    # migration 0028: the KEK generation and backend that wrapped this key; retirement
    kek_version: Mapped[int] = mapped_column(Integer, default=1, server_default=text("1"))
    kek_backend: Mapped[str] = mapped_column(String(8), default="file", server_default="file")
    retired_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


@dataclass(frozen=True, slots=True)
class DataKey:
    custodian: str
    purpose: str
    version: int
    raw: bytes
    aead: AESGCM | None


def _label(purpose: str, version: int) -> str:
    return f"{purpose}/v{version}"


class DataKeyStore:
    """Process-wide cache of unwrapped data keys, refreshed from the database on a miss."""

    MAX_AGE = 60.0  # seconds: a retirement elsewhere is seen by this process within it

    def __init__(self, keyring: FileKeyring | KekRouter, reload: Callable[[Callable[[Connection], None]], None] | None = None) -> None:
        """`reload(fn)` must call `fn` with a connection that can read `data_keys` outside the
        caller's transaction (Runtime provides an autocommit connection)."""
        self.keyring = keyring
        self.kek = keyring if isinstance(keyring, KekRouter) else KekRouter(keyring)
        self._reload = reload
        self._loaded_at = time.monotonic()
        self._keys: dict[tuple[str, str, int], DataKey] = {}
        self._active: dict[tuple[str, str], int] = {}
        self._lock = threading.Lock()
        self._last_miss: dict[tuple, float] = {}

    def _refresh_on_miss(self, ident: tuple) -> None:
        if self._reload is None:
            return
        now = time.monotonic()
        if now - self._last_miss.get(ident, 0.0) < 1.0:
            return
        self._last_miss[ident] = now
        self._reload(self.load)

    def load(self, conn: Connection) -> None:
        rows = conn.execute(select(DataKeyRow.__table__)).all()
        with self._lock:
            present = set()
            for r in rows:
                ident = (r.custodian, r.purpose, r.version)
                if r.retired_at is not None:
                    continue
                present.add(ident)
                if ident not in self._keys:
                    raw = self.kek.unwrap(r.custodian, _label(r.purpose, r.version), r.wrapped_key, r.kek_version, r.kek_backend)
                    aead = AESGCM(raw) if r.purpose == "field" else None
                    self._keys[ident] = DataKey(r.custodian, r.purpose, r.version, raw, aead)
                if r.active:
                    self._active[(r.custodian, r.purpose)] = r.version
            for gone in set(self._keys) - present:  # retired or deleted: refused from now on
                del self._keys[gone]
            self._loaded_at = time.monotonic()

    def ensure(self, conn: Connection, custodians: list[str]) -> None:
        """Create version 1 of each missing key; safe to run concurrently and repeatedly."""
        self.load(conn)
        for custodian in custodians:
            for purpose in PURPOSES:
                if (custodian, purpose) not in self._active:
                    self._insert_version(conn, custodian, purpose, 1)
        self.load(conn)

    def rotate(self, conn: Connection, custodian: str, purpose: str = "field") -> int:
        """Add and activate a new version; old versions stay readable."""
        self.load(conn)
        current = self._active.get((custodian, purpose), 0)
        conn.execute(
            update(DataKeyRow.__table__)
            .where(DataKeyRow.custodian == custodian, DataKeyRow.purpose == purpose)
            .values(active=False)
        )
        self._insert_version(conn, custodian, purpose, current + 1)
        with self._lock:
            self._active.pop((custodian, purpose), None)
        self.load(conn)
        return current + 1

    def _insert_version(self, conn: Connection, custodian: str, purpose: str, version: int) -> None:
        raw = secrets.token_bytes(32)
        kek_version = self.kek.current_kek_version(custodian)
        wrapped = self.kek.wrap(custodian, _label(purpose, version), raw, kek_version)
        with conn.begin_nested():
            try:
                conn.execute(
                    insert(DataKeyRow.__table__).values(
                        custodian=custodian, purpose=purpose, version=version,
                        wrapped_key=wrapped, active=True, created_at=datetime.now(UTC),
                        kek_version=kek_version, kek_backend=self.kek.backend_name(custodian),
                    )
                )
            except Exception:  # another worker won the race; its key is the one to use
                pass

    def retire(self, conn: Connection, custodian: str, version: int, purpose: str = "field") -> None:
        """Mark a version retired: refused for decryption from now on. The caller has checked
        that no row uses it; the active version is refused (KeyUnavailable)."""
        row = conn.execute(select(DataKeyRow.__table__).where(
            DataKeyRow.custodian == custodian, DataKeyRow.purpose == purpose, DataKeyRow.version == version)).first()
        if row is None:
            raise KeyUnavailable(f"{purpose} key v{version} of {custodian} does not exist")
        if row.active:
            raise KeyUnavailable(f"{purpose} key v{version} of {custodian} is the active version; rotate first")
        conn.execute(update(DataKeyRow.__table__).where(
            DataKeyRow.custodian == custodian, DataKeyRow.purpose == purpose, DataKeyRow.version == version,
            DataKeyRow.retired_at.is_(None)).values(retired_at=datetime.now(UTC)))
        with self._lock:
            self._keys.pop((custodian, purpose, version), None)

    def delete_retired(self, conn: Connection, custodian: str, version: int, purpose: str = "field") -> bool:
        """Delete the wrapped form of a retired version (irreversible); False if it is not retired."""
        done = conn.execute(delete(DataKeyRow.__table__).where(
            DataKeyRow.custodian == custodian, DataKeyRow.purpose == purpose, DataKeyRow.version == version,
            DataKeyRow.retired_at.is_not(None), DataKeyRow.active.is_(False)))
        return done.rowcount == 1

    def rewrap(self, conn: Connection, custodian: str) -> tuple[int, list[tuple[str, int]]]:
        """KEK rotation: create the next KEK generation in the custodian's configured backend and
        re-wrap every data key of the custodian (retired ones too) under it, in the caller's
        transaction. Returns the new generation and the (backend, generation) pairs now unused."""
        rows = conn.execute(select(DataKeyRow.__table__).where(DataKeyRow.custodian == custodian)).all()
        if not rows:
            raise KeyUnavailable(f"{custodian} has no data keys")
        new = self.kek.new_kek_version(custodian)
        backend = self.kek.backend_name(custodian)
        for r in rows:
            label = _label(r.purpose, r.version)
            raw = self.kek.unwrap(custodian, label, r.wrapped_key, r.kek_version, r.kek_backend)
            conn.execute(update(DataKeyRow.__table__).where(
                DataKeyRow.custodian == custodian, DataKeyRow.purpose == r.purpose, DataKeyRow.version == r.version,
            ).values(wrapped_key=self.kek.wrap(custodian, label, raw, new), kek_version=new, kek_backend=backend))
        return new, sorted({(r.kek_backend, r.kek_version) for r in rows} - {(backend, new)})

    def _reload_if_old(self) -> None:
        """At most every MAX_AGE seconds: see other processes' rotations (new writes move to the
        new version) and retirements (the retired version is dropped)."""
        if self._reload is not None and time.monotonic() - self._loaded_at > self.MAX_AGE:
            self._loaded_at = time.monotonic()
            self._reload(self.load)

    def get(self, custodian: str, purpose: str, version: int) -> DataKey:
        self._reload_if_old()
        key = self._keys.get((custodian, purpose, version))
        if key is None:
            self._refresh_on_miss((custodian, purpose, version))
            key = self._keys.get((custodian, purpose, version))
        if key is None:
            raise KeyUnavailable(f"{purpose} key v{version} of {custodian} is not loaded")
        return key

    def active(self, custodian: str, purpose: str) -> DataKey:
        self._reload_if_old()
        version = self._active.get((custodian, purpose))
        if version is None:
            self._refresh_on_miss((custodian, purpose))
            version = self._active.get((custodian, purpose))
        if version is None:
            raise KeyUnavailable(f"no active {purpose} key for {custodian}")
        return self._keys[(custodian, purpose, version)]

    def versions(self, custodian: str, purpose: str) -> list[DataKey]:
        return [k for (c, p, _), k in self._keys.items() if c == custodian and p == purpose]

    def custodians(self) -> set[str]:
        return {c for c, _ in self._active}
