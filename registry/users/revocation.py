"""Revocable staff access tokens: a token generation per account, checked on every request.

Every staff token carries the generation of its account when it was issued (`tgen`). Logout,
deactivation, a password reset and an administrator's "end all sessions" increment
`users.token_generation` (`bump`), which revokes every token issued before, on every worker.

Why generations and not a list of revoked token ids (`jti`): the check needs one small read per
account, which a per-process cache absorbs, and nothing grows (a revocation list needs a row per
revoked token until it expires, and a lookup per token). The price: logout ends every token of
the account, not only the one presented (a staff account is one person; their other devices log
in again). Console sessions are server-side rows and are ended explicitly by the same actions
(except logout, which ends the token or the session it was called with).

Invariants:
- A staff token is accepted only while its `tgen` equals the account's generation and the account
  is active; a staff token without `tgen` is refused (fail closed). Citizen tokens are not staff
  tokens: their access-code generation (`gen`) is checked by registry/citizens.
- Each process remembers (generation, active) per account for at most `max_age` seconds
  (`NHR_TOKEN_REVOCATION_CHECK_SECONDS`, default 0.5; 0 reads on every request), counted from the
  start of the read, so every request a worker handles `max_age` after a revocation was committed
  (through any worker) is refused. The read uses its own
  autocommit connection: no transaction, no write lock on SQLite.
- `bump` runs in the caller's transaction: the revocation takes effect when the caller commits.
"""

from __future__ import annotations

import threading
import time
import uuid

from sqlalchemy import select, update
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session

from registry.users.models import User

STALE = object()  # `cached` found nothing fresh: call `load`


class TokenGenerations:
    """The per-process cache of account token generations (None: no such account, or inactive)."""

    def __init__(self, engine: Engine, max_age: float, max_size: int = 50_000) -> None:
        self.engine = engine
        self.max_age = max_age
        self.max_size = max_size
        self._seen: dict[uuid.UUID, tuple[int | None, float]] = {}
        self._lock = threading.Lock()

    def cached(self, user_id: uuid.UUID, *, now: float | None = None) -> int | None | object:
        """The generation if read less than `max_age` seconds ago, else STALE (no I/O)."""
        found = self._seen.get(user_id)
        if found is None or (time.monotonic() if now is None else now) - found[1] >= self.max_age:
            return STALE
        return found[0]

    def load(self, user_id: uuid.UUID) -> int | None:
        """Read the account's generation (None if unknown or inactive) and remember it."""
        started = time.monotonic()  # the copy is as old as the read's start, not its end
        with self.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            row = conn.execute(select(User.token_generation, User.active).where(User.id == user_id)).first()
        generation = row.token_generation if row is not None and row.active else None
        with self._lock:
            if len(self._seen) >= self.max_size:
                self._seen.clear()  # bounded: a burst of accounts only costs re-reading
            self._seen[user_id] = (generation, started)
        return generation

    def current(self, user_id: uuid.UUID) -> int | None:
        found = self.cached(user_id)
        return self.load(user_id) if found is STALE else found


def accepts(claims: dict, generation: int | None) -> bool:
    """Whether a staff token's claims match the account's current generation."""
    tgen = claims.get("tgen")
    return generation is not None and isinstance(tgen, int) and not isinstance(tgen, bool) and tgen == generation


def bump(session: Session, user: User) -> int:
    """Revoke every token of `user` issued so far (effective at the caller's commit) -> the new generation."""
    session.execute(update(User).where(User.id == user.id).values(token_generation=User.token_generation + 1))
    session.refresh(user, ["token_generation"])
    return user.token_generation
