"""Engine and session factory for PostgreSQL (production) and SQLite (embedded default).

Invariants:
- SQLite runs with foreign keys on, WAL journal and a busy timeout, and every transaction
  starts with BEGIN IMMEDIATE so that two writers queue instead of failing mid-transaction.
- PostgreSQL URLs are normalised to the psycopg 3 driver.
- Services never commit; the unit of work that owns the request does (see api/deps.py).
- `unavailable(exc)` is the one place that decides whether an error means "the database cannot
  be reached" (server down, restarting, connection lost), on both drivers; `commit` tells a
  commit whose outcome is unknown (the connection was lost while COMMIT was in flight) from one
  that failed before anything was sent.
"""

from __future__ import annotations

from pathlib import Path

import psycopg
from sqlalchemy import create_engine, event
from sqlalchemy.engine import Engine
from sqlalchemy.exc import DBAPIError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from sqlalchemy.orm import Session, sessionmaker

from registry import errors

RETRY_AFTER_SECONDS = 5  # what a client is told to wait while the database is unreachable (as /readyz)
# SQLSTATEs that mean the server is going away or not accepting connections (class 08 is added below):
# admin_shutdown (pg_terminate_backend, a fast shutdown), crash_shutdown, cannot_connect_now (starting up).
_GONE = ("57P01", "57P02", "57P03")


def normalise_url(url: str) -> str:
    for prefix in ("postgres://", "postgresql://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix):]
    return url


def make_engine(url: str, *, pool_size: int = 10) -> Engine:
    url = normalise_url(url)
    if url.startswith("sqlite"):
        path = url.split("///", 1)[1] if "///" in url else ""
        if path and path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 30})

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_conn, _record):  # pragma: no cover - exercised by every SQLite test
            dbapi_conn.isolation_level = None  # let SQLAlchemy's begin event emit BEGIN
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA foreign_keys=ON")
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA synchronous=NORMAL")
            cur.close()

        @event.listens_for(engine, "begin")
        def _sqlite_begin(conn):  # pragma: no cover
            # Autocommit connections (key reloads) only read, outside any write lock.
            if conn.get_execution_options().get("isolation_level") != "AUTOCOMMIT":
                conn.exec_driver_sql("BEGIN IMMEDIATE")

        return engine
    # pool_pre_ping: every connection is tested (one `SELECT 1` round trip) before it is lent, and a
    # dead one is replaced, so after a server restart no request meets a broken connection (without
    # it, the first request on each pool answered 503). The hot reads run on the async pool
    # (registry/async_database.py), which retries a read on a dead connection instead; this pool
    # serves the unit of work (writes and the rest), where a write costs several round trips anyway.
    # connect_timeout: while the server is unreachable a request answers 503 promptly instead of hanging.
    return create_engine(url, pool_size=pool_size, max_overflow=pool_size, pool_recycle=1800, pool_pre_ping=True,
                         connect_args={"connect_timeout": 5})


def make_session_factory(engine: Engine, *, info: dict | None = None) -> sessionmaker[Session]:
    """`info` is copied into every session's `Session.info` (the audit events' MAC key)."""
    return sessionmaker(engine, expire_on_commit=False, autoflush=False, info=info or {})


def unavailable(exc: BaseException) -> bool:
    """Whether `exc` means the database cannot be reached: a lost or refused connection, a server
    shutting down or starting up, an exhausted wait for a pooled connection. Not a deadlock, a
    serialization failure or a constraint: those are answers from a reachable server."""
    if isinstance(exc, PoolTimeout):  # no connection came free within the pool's timeout
        return True
    if isinstance(exc, DBAPIError):
        if exc.connection_invalidated:
            return True
        exc = exc.orig
    if isinstance(exc, psycopg.OperationalError):
        state = exc.sqlstate
        return state is None or state.startswith("08") or state in _GONE
    return False


def commit(session: Session) -> None:
    """Flush, then COMMIT. Raises `errors.DatabaseUnavailable` when the database could not be
    reached before COMMIT was sent (nothing was changed) and `errors.OutcomeUnknown` when the
    connection was lost during COMMIT (the server may have committed: only an idempotent retry
    can tell the client which)."""
    try:
        session.flush()
    except Exception as exc:
        if unavailable(exc):
            raise errors.DatabaseUnavailable(UNAVAILABLE, retry_after=RETRY_AFTER_SECONDS) from exc
        raise
    try:
        session.commit()
    except Exception as exc:
        if unavailable(exc):
            raise errors.OutcomeUnknown(OUTCOME_UNKNOWN, retry_after=RETRY_AFTER_SECONDS) from exc
        raise


UNAVAILABLE = "the database cannot be reached; nothing was changed; retry later"
OUTCOME_UNKNOWN = ("the connection to the database was lost while the change was being committed: it may or may not "
                   "have been made. A retry with the same Idempotency-Key is safe (it replays the answer if the change "
                   "was made, and makes it once otherwise); without one, check before repeating the request")


def unavailable_error() -> errors.DatabaseUnavailable:
    return errors.DatabaseUnavailable(UNAVAILABLE, retry_after=RETRY_AFTER_SECONDS)
