"""PostgreSQL connections for the hot paths that run on the event loop (issue 7).

Why: a sync route costs three thread hand-offs per request (the unit of work's entry and exit
and the route itself) plus the ORM session; on this 2-core machine that, not the database, is
what held the audited read to a few hundred requests a second. The hot paths (read a patient,
search by identifier) therefore run as coroutines on psycopg's async driver, with statements
built once by SQLAlchemy Core (`Compiled`) and prepared server-side by psycopg.

Invariants:
- PostgreSQL only. On SQLite (the embedded default) `Runtime.aio` is None and the same services
  run their sync path in a worker thread: one behaviour, two drivers, the same SQL clauses
  (the scope clause comes from `registry/scoping.py` either way).
- Every connection is in autocommit, and the async paths are built so that their only write is
  their last statement (the audit event): a failure before it leaves nothing behind, exactly
  as the sync unit of work's rollback does, with two round trips fewer than BEGIN ... COMMIT.
  A path that needs several writes uses the transaction of registry/async_unit.py (BEGIN ...
  COMMIT on one connection of this pool; issue 17) or the sync unit of work (psycopg's pipeline
  mode would save the BEGIN's round trip, but its async wait polls the always-writable socket
  and cost more CPU than it saved: measured, not used; async_unit sends BEGIN with its first
  statements in one simple-protocol message instead).
- The pool is opened and closed by the application's lifespan, on the loop that serves the
  requests; connections are never shared between loops.
- A connection broken while idle in the pool (a PostgreSQL restart, a terminated backend) costs
  no request: a read (`one`, `all`) that is the first statement of its block and fails because
  the connection is gone is run again, once, on a fresh connection; the dead one goes back to the
  pool, which discards it, and the pool tests its other idle connections (`check`: after a
  restart they are all dead). Nothing was written before it, so the retry is safe; a write
  (`execute`) is never retried (its outcome on a lost connection is unknown). Checking each
  connection on checkout (psycopg_pool's `check`) would cost a round trip on every request.
- Each connection keeps one psycopg cursor per statement it has run (`_cursor`): psycopg keeps a
  cursor's adaptation state (its Transformer: the parameters' dumpers, the columns' loaders)
  only while the same query object is executed again on the same cursor, and builds all of it
  anew for a new cursor. `conn.execute` makes a new cursor every time; re-using one per
  (connection, statement) measured about 70 us less CPU a statement of the audited read's size
  in a micro-benchmark, and the audited read 1.15x less CPU in-process (`python -m
  bench.readpath --cursor-ab`; bench/RESULTS.md, 2026-12-03 16:27). The cursors live and die
  with their connection (a broken one is discarded by the pool with its cursors); every
  `one`/`all` fetches its rows before it returns, so no caller holds a cursor another call
  re-uses. A cursor keeps its last result until its next execution: the hot paths' few rows,
  at most one result per (pooled connection, statement).
"""

from __future__ import annotations

from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import AsyncIterator

import psycopg
from psycopg.rows import namedtuple_row
from psycopg.types.json import Jsonb
from psycopg_pool import AsyncConnectionPool
from sqlalchemy import JSON
from sqlalchemy.dialects import postgresql
from sqlalchemy.sql.expression import ClauseElement

_DIALECT = postgresql.dialect(paramstyle="pyformat")

# psycopg parses a query's text into its Postgres form once per distinct query, but caches that
# only for queries of at most 50 parameters (psycopg/_queries.py); the writes of register and
# record a dose (registry/async_unit.py) take 60-150, so each was parsed again on every request
# (`_split_query`, 7% of a dose's CPU in py-spy). Their text is one of a few shapes per process.
try:
    import psycopg._queries as _pg_queries

    _pg_queries.MAX_CACHED_STATEMENT_PARAMS = max(_pg_queries.MAX_CACHED_STATEMENT_PARAMS, 400)
except (ImportError, AttributeError):  # pragma: no cover - another psycopg: parsed each time, still correct
    pass


@dataclass(frozen=True)
class Compiled:
    """A Core statement rendered once for psycopg: the SQL text, the values of the literals
    SQLAlchemy turned into parameters, and which parameters need a JSON adapter (psycopg does
    not guess `json` from a dict)."""

    sql: str
    defaults: dict
    json_params: frozenset[str]

    @classmethod
    def of(cls, stmt: ClauseElement) -> Compiled:
        compiled = stmt.compile(dialect=_DIALECT)
        json_params = frozenset(name for name, bind in compiled.binds.items() if isinstance(bind.type, JSON))
        return cls(str(compiled), dict(compiled.params), json_params)

    def params(self, values: dict) -> dict:
        out = {**self.defaults, **values}
        for k in self.json_params:
            if out.get(k) is not None:
                out[k] = Jsonb(out[k])
        return out


class AsyncDatabase:
    def __init__(self, url: str, *, max_size: int = 20) -> None:
        conninfo = url.replace("postgresql+psycopg://", "postgresql://", 1)
        self.event_mac = None  # the audit events' MAC key (security/audit/event_mac.py), set by the Runtime
        self.pool = AsyncConnectionPool(conninfo, min_size=1, max_size=max_size, open=False, timeout=CHECKOUT_TIMEOUT,
                                        kwargs={"row_factory": namedtuple_row, "autocommit": True, "connect_timeout": 5,
                                                "application_name": "nhr-hot-path"})

    async def open(self) -> None:
        await self.pool.open(wait=True, timeout=30)

    async def close(self) -> None:
        await self.pool.close()

    @asynccontextmanager
    async def statements(self) -> AsyncIterator[Lease]:
        """A pooled connection on which each statement commits on its own (autocommit). For
        blocks whose only write is their last statement: if anything fails before it, nothing
        was written, the guarantee of a transaction without BEGIN and COMMIT."""
        lease = Lease(await self.pool.getconn(timeout=CHECKOUT_TIMEOUT))
        try:
            yield lease
        finally:
            if lease.conn is not None:
                await self.pool.putconn(lease.conn)

    async def _read(self, lease: Lease, statement: Compiled, values: dict):
        first, lease.used = not lease.used, True
        try:
            return await _cursor(lease.conn, statement).execute(statement.sql, statement.params(values), prepare=True)
        except psycopg.OperationalError as exc:
            if not (first and _gone(exc, lease.conn)):
                raise
        dead, lease.conn = lease.conn, None
        await self.pool.putconn(dead)  # broken: the pool discards it
        # One dead connection means the server went away: the other idle ones are dead too. Test
        # them all now (one round trip each, once per outage) rather than hand each out to fail.
        await self.pool.check()
        lease.conn = await self.pool.getconn(timeout=CHECKOUT_TIMEOUT)
        return await _cursor(lease.conn, statement).execute(statement.sql, statement.params(values), prepare=True)

    async def one(self, conn: Lease, statement: Compiled, values: dict):
        """Run `statement` (a read); the single row (or None)."""
        return await (await self._read(conn, statement, values)).fetchone()

    async def all(self, conn: Lease, statement: Compiled, values: dict) -> list:
        """Run `statement` (a read); all rows."""
        return await (await self._read(conn, statement, values)).fetchall()

    async def execute(self, conn: Lease, statement: Compiled, values: dict) -> None:
        """Run `statement` (a write: never retried)."""
        conn.used = True
        await _cursor(conn.conn, statement).execute(statement.sql, statement.params(values), prepare=True)


_CURSORS = "_nhr_statement_cursors"  # the connection's attribute holding them (psycopg's own names start with one _)
_MAX_CURSORS = 64  # statements per connection; the hot paths use a handful, built once per process


def _cursor(conn: psycopg.AsyncConnection, statement: Compiled) -> psycopg.AsyncCursor:
    """The connection's cursor for `statement`, made on first use (see the module docstring).
    Kept on the connection itself, so that they go with it (a dictionary keyed by connection
    would keep every connection alive through its cursors' reference to it)."""
    cursors = getattr(conn, _CURSORS, None)
    if cursors is None:
        cursors = {}
        setattr(conn, _CURSORS, cursors)
    cur = cursors.get(statement.sql)
    if cur is None or cur.closed:
        if len(cursors) >= _MAX_CURSORS:
            cursors.clear()  # statements built per request (none today): start over rather than grow
        cur = cursors[statement.sql] = conn.cursor()
    return cur


CHECKOUT_TIMEOUT = 10.0  # seconds a request waits for a pooled connection before it is answered 503


class Lease:
    """A connection lent to one block of statements, and whether any statement ran on it yet."""

    __slots__ = ("conn", "used")

    def __init__(self, conn: psycopg.AsyncConnection) -> None:
        self.conn: psycopg.AsyncConnection | None = conn
        self.used = False


def _gone(exc: psycopg.OperationalError, conn: psycopg.AsyncConnection) -> bool:
    """The connection died before the statement ran (a terminated or restarted server), not a
    failure of the statement itself."""
    return conn.broken or conn.closed
