"""The idempotency store (registry/sync/idempotency.py) on the async unit of work
(registry/async_unit.py, PostgreSQL): the same rows, rules and answers, as `Compiled` statements.

`claim` runs in autocommit on the unit's connection before its BEGIN (so a concurrent request
with the key sees the claim, and the claim names the backend that does the work); `complete`
runs inside the transaction, with the data; `release` after a rollback.
"""

from __future__ import annotations

import secrets
from datetime import UTC, datetime, timedelta

from sqlalchemy import bindparam, delete, literal_column, select, text, update
from sqlalchemy.dialects.postgresql import insert as pg_insert

from registry.async_database import Compiled
from registry.async_unit import AsyncUnit
from registry.errors import Conflict, InvalidInput
from registry.sync.idempotency import (DONE, HEADER, KEYS, PENDING, PURGE_ONE_IN, Claim, Stored, _ALIVE, _BACKEND_START,
                                       seal, unseal)

_STILL_RUNNING = "a request with this Idempotency-Key is still being processed; retry later"
_FRESH = ("key_hash", "fingerprint", "state", "claim_token", "locked_until", "created_at", "expires_at")


def _p(name: str, column: str | None = None):
    return bindparam(name, type_=KEYS.c[column or name].type)


_INSERT = Compiled.of(
    pg_insert(KEYS).values({**{c: _p(c) for c in _FRESH}, "owner_pid": literal_column("pg_backend_pid()"),
                            "owner_started": _BACKEND_START})
    .on_conflict_do_nothing(index_elements=["key_hash"]).returning(KEYS.c.key_hash))
_PURGE = Compiled.of(delete(KEYS).where(KEYS.c.expires_at < _p("now", "expires_at")))
_SELECT = Compiled.of(select(KEYS).where(KEYS.c.key_hash == _p("key_hash")))
_DELETE_EXPIRED = Compiled.of(delete(KEYS).where(KEYS.c.key_hash == _p("key_hash"), KEYS.c.expires_at == _p("expires_at")))
_TAKEOVER = Compiled.of(
    update(KEYS).where(KEYS.c.key_hash == _p("key_hash"), KEYS.c.state == PENDING, KEYS.c.claim_token == _p("old_token", "claim_token"))
    .values(claim_token=_p("claim_token"), locked_until=_p("locked_until"), owner_pid=literal_column("pg_backend_pid()"),
            owner_started=_BACKEND_START).returning(KEYS.c.key_hash))
_ALIVE_STMT = Compiled.of(_ALIVE)
_COMPLETE = Compiled.of(
    update(KEYS).where(KEYS.c.key_hash == _p("key_hash"), KEYS.c.claim_token == _p("claim_token"), KEYS.c.state == PENDING)
    .values(state=DONE, status_code=_p("status_code"), response_ct=_p("response_ct")).returning(KEYS.c.key_hash))
_RELEASE = Compiled.of(delete(KEYS).where(KEYS.c.key_hash == _p("key_hash"), KEYS.c.claim_token == _p("claim_token"),
                                          KEYS.c.state == PENDING))


async def claim(unit: AsyncUnit, keyring, kh: bytes, fp: bytes, *, lock_seconds: float, ttl_seconds: float,
                now: datetime | None = None) -> Claim | Stored:
    """`idempotency.claim` (same outcomes: a Claim, the Stored response, InvalidInput, Conflict)."""
    now = now or datetime.now(UTC)
    if secrets.randbelow(PURGE_ONE_IN) == 0:
        await unit.autocommit(_PURGE, {"now": now})
    token = secrets.token_bytes(16)
    locked_until = now + timedelta(seconds=lock_seconds)
    fresh = {"key_hash": kh, "fingerprint": fp, "state": PENDING, "claim_token": token, "locked_until": locked_until,
             "created_at": now, "expires_at": now + timedelta(seconds=ttl_seconds)}
    if await unit.autocommit(_INSERT, fresh):  # the usual case, a new key: one statement
        return Claim(kh, token)
    rows = await unit.autocommit(_SELECT, {"key_hash": kh})
    row = rows[0] if rows else None
    if row is not None and row.expires_at <= now:
        await unit.autocommit(_DELETE_EXPIRED, {"key_hash": kh, "expires_at": row.expires_at})
        row = None
    if row is None:
        if await unit.autocommit(_INSERT, fresh):
            return Claim(kh, token)
        raise Conflict(_STILL_RUNNING, field=HEADER)  # another request inserted it first and is running
    if row.fingerprint != fp:
        raise InvalidInput("this Idempotency-Key was already used for a different request", field=HEADER)
    if row.state == DONE:
        return unseal(keyring, kh, row.response_ct)
    if row.locked_until > now and await _owner_alive(unit, row.owner_pid, row.owner_started):
        raise Conflict(_STILL_RUNNING, field=HEADER)
    if not await unit.autocommit(_TAKEOVER, {"key_hash": kh, "old_token": row.claim_token, "claim_token": token,
                                             "locked_until": locked_until}):
        raise Conflict(_STILL_RUNNING, field=HEADER)
    return Claim(kh, token)


async def _owner_alive(unit: AsyncUnit, pid: int | None, started: datetime | None) -> bool:
    if pid is None:
        return True
    rows = await unit.autocommit(_ALIVE_STMT, {"pid": pid, "started": started})
    return bool(rows and rows[0][0])


async def complete(unit: AsyncUnit, keyring, claim_: Claim, stored: Stored) -> bool:
    """Store the response on our own claim, in the unit's (the data's) transaction."""
    rows = await unit.all(_COMPLETE, {"key_hash": claim_.key_hash, "claim_token": claim_.token, "status_code": stored.status,
                                      "response_ct": seal(keyring, claim_.key_hash, stored)})
    return len(rows) == 1


async def release(unit: AsyncUnit, claim_: Claim) -> None:
    """Give the key back (inside the transaction, or in autocommit after a rollback)."""
    if unit.in_transaction:
        await unit.execute(_RELEASE, {"key_hash": claim_.key_hash, "claim_token": claim_.token})
    else:
        await unit.autocommit(_RELEASE, {"key_hash": claim_.key_hash, "claim_token": claim_.token})
