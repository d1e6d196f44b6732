"""Access codes made ahead of registration (issue 17): argon2id off the request path.

Each registration issues an access code and stores its argon2id hash (registry/citizens/codes.py),
about 1.2 ms of CPU at the codes' parameters, which DESIGN.md section 6 keeps off the per-request
paths. `nhr worker` keeps a bounded pool of ready codes on each node (`access_code_pool`, migration
0044); a registration takes one row in its own transaction, opens the sealed code and shows it.

Invariants:
- No code in the clear at rest: a row holds the code's argon2id hash and the code sealed with
  AES-256-GCM under the keyring's named secret `access-code-pool`, the hash bound as associated
  data (a sealed code moved to another row's hash does not open).
- A code is issued at most once: the registration deletes the row it takes in the transaction
  that stores the hash as the patient's (PostgreSQL: `FOR UPDATE SKIP LOCKED`, so concurrent
  registrations take different rows without waiting on each other). A registration that rolls
  back (refused, or failed) puts its row back unissued: the code left nothing but the process's
  memory, and it was never in a response.
- An empty pool (no worker, a burst that drained it, `code_pool_size` 0), a row that does not
  open (the secret replaced), or a keyring without the secret: the registration hashes a new
  code itself, as before the pool; the row it took, if any, is consumed all the same.
- The refill yields to requests: its hashing runs in a thread of its own at the lowest CPU
  priority (nice 19, Linux; elsewhere as is), so on a node whose `nhr worker` shares cores with
  the API it takes idle CPU, and a burst drains the pool (then falls back) rather than competing
  with the refill for the cores.
- Bounded: a refill never takes the pool above `code_pool_size` (PostgreSQL: refills serialised
  by an advisory lock, so two workers do not overshoot together), and makes at most
  `REFILL_BATCH` codes a tick, so a drained pool costs the worker about 0.6 s of CPU a tick.
"""

from __future__ import annotations

import logging
import os
import secrets
import threading
from datetime import UTC, datetime

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from sqlalchemy import delete, func, insert, select, text
from sqlalchemy.orm import Session

from registry import periodic
from registry.citizens import codes
from registry.citizens.models import AccessCodePoolRow
from security.crypto.errors import KeyUnavailable

POOL = AccessCodePoolRow.__table__
SECRET_NAME = "access-code-pool"
REFILL_BATCH = 500
REFILL_NICE = 19
_AAD = b"nhr/code-pool1|"
_LOCK_KEY = 7_070_707  # PostgreSQL advisory lock: one refill at a time

log = logging.getLogger("nhr.citizens.code_pool")


def seal(keyring, code_hash: str, code: str) -> bytes:
    """The code (any accepted form) sealed for the row holding `code_hash`."""
    nonce = secrets.token_bytes(12)
    return nonce + AESGCM(keyring.secret(SECRET_NAME)).encrypt(nonce, codes.normalise(code).encode(), _AAD + code_hash.encode())


def open_sealed(keyring, code_hash: str, sealed: bytes) -> str | None:
    """The code for printing, or None if the row does not open (another secret, another row's hash)."""
    try:
        compact = AESGCM(keyring.secret(SECRET_NAME)).decrypt(bytes(sealed[:12]), bytes(sealed[12:]), _AAD + code_hash.encode())
    except (InvalidTag, KeyUnavailable) as exc:
        log.warning("a pooled access code did not open (%s); hashing a new one", type(exc).__name__)
        return None
    return codes.display(compact.decode())


def take_statement(postgresql: bool):
    """DELETE one pool row RETURNING its hash and sealed code (none: the pool is empty)."""
    pick = select(POOL.c.id).order_by(POOL.c.id).limit(1)
    if postgresql:
        pick = pick.with_for_update(skip_locked=True)
    return delete(POOL).where(POOL.c.id == pick.scalar_subquery()).returning(POOL.c.code_hash, POOL.c.code_ct)


def issued_from(keyring, hasher, taken) -> tuple[str, str]:
    """(code, hash) from the row a registration took (`taken`: a row with `code_hash`, `code_ct`,
    or None), or a code hashed now when there is none or it does not open."""
    if taken is not None:
        code = open_sealed(keyring, taken.code_hash, taken.code_ct)
        if code is not None:
            return code, taken.code_hash
    return codes.issue(hasher)


def issue(session: Session, keyring, hasher, *, pooled: bool = True) -> tuple[str, str]:
    """(code, hash) for a registration in `session`'s transaction: a pool row, taken and deleted
    in it, else a code hashed now (the sync path: SQLite, or PostgreSQL without the async unit)."""
    taken = None
    if pooled:
        taken = session.execute(take_statement(session.get_bind().dialect.name == "postgresql")).first()
    return issued_from(keyring, hasher, taken)


def worth_taking(session: Session) -> bool:
    """Whether the sync path should take from the pool: on PostgreSQL always (the take costs no
    extra round trip worth saving); on SQLite only if the pool has a row, read outside any
    transaction, so that an empty pool's code is hashed before the registration's first statement
    takes SQLite's write lock (as before the pool) instead of while holding it."""
    engine = session.get_bind()
    if engine.dialect.name == "postgresql":
        return True
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        return conn.execute(select(POOL.c.id).limit(1)).first() is not None


def size(session: Session) -> int:
    return session.execute(select(func.count()).select_from(POOL)).scalar_one()


def refill(rt, *, target: int | None = None, batch: int = REFILL_BATCH) -> int:
    """Add up to `batch` codes, never above `target` (the setting) rows -> how many were added.
    The hashing runs outside any transaction; the insert re-counts under the refill lock."""
    target = rt.settings.citizen.code_pool_size if target is None else target
    with rt.sessions() as s:
        want = min(target - size(s), batch)
    if want <= 0:
        return 0
    rows = _made_at_low_priority(rt, want)
    with rt.sessions.begin() as s:
        if s.get_bind().dialect.name == "postgresql":
            s.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": _LOCK_KEY})
        room = max(0, min(len(rows), target - size(s)))
        if room:
            s.execute(insert(POOL), rows[:room])
    return room


def made(rt, n: int) -> list[dict]:
    """`n` new pool rows (the argon2id hashing: about 1.2 ms each)."""
    now, rows = datetime.now(UTC), []
    for _ in range(n):
        code, code_hash = codes.issue(rt.code_hasher)
        rows.append({"code_hash": code_hash, "code_ct": seal(rt.keyring, code_hash, code), "created_at": now})
    return rows


def _made_at_low_priority(rt, n: int) -> list[dict]:
    """`made` in a thread of its own at nice REFILL_NICE (a thread's own priority on Linux; a
    thread cannot raise its priority back, hence a new thread each time)."""
    out: list = []

    def work():
        try:
            os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), REFILL_NICE)
        except (AttributeError, OSError):  # not Linux, or not permitted: hash at the usual priority
            pass
        try:
            out.append(made(rt, n))
        except BaseException as exc:  # noqa: BLE001 - re-raised in the caller's thread
            out.append(exc)
    t = threading.Thread(target=work, name="nhr-access-code-hashing", daemon=True)
    t.start()
    t.join()
    if isinstance(out[0], BaseException):
        raise out[0]
    return out[0]


def start_background(rt):
    """The refill every `code_pool_refill_seconds` in `nhr worker` (None when off or size 0)."""
    c = rt.settings.citizen
    if c.code_pool_size == 0:
        return None
    try:
        rt.keyring.secret(SECRET_NAME)
    except KeyUnavailable:  # a keyring provisioned before the pool: `nhr keys init` adds the secret
        log.warning("access code pool off: the keyring has no %r secret (run `nhr keys init`); "
                    "registrations hash their own codes", SECRET_NAME)
        return None
    return periodic.start("nhr-access-code-pool", c.code_pool_refill_seconds, lambda tick: refill(rt), log,
                          "access code pool refill")


stop_background = periodic.stop
