"""Engine and session factory for PostgreSQL (production) and SQLite (embedded default).

Invariants:
- SQLite runs with foreign keys on, WAL journal and a busy timeout, and every transaction
  starts with BEGIN IMMEDIATE so that two writers queue instead of failing mid-transaction.
- PostgreSQL URLs are normalised to the psycopg 3 driver.
- Services never commit; the unit of work that owns the request does (see api/deps.py).
"""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import create_engine, event
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session, sessionmaker


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
    # No pre-ping: it costs a round trip per request; stale connections are recycled instead and a
    # disconnect invalidates the pool, so only the request that hit it fails.
    return create_engine(url, pool_size=pool_size, max_overflow=pool_size, pool_recycle=1800)


def make_session_factory(engine: Engine, *, info: dict | None = None) -> sessionmaker[Session]:
    """`info` is copied into every session's `Session.info` (the audit events' MAC key)."""
    return sessionmaker(engine, expire_on_commit=False, autoflush=False, info=info or {})
