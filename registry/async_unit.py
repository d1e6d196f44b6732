"""A transaction on the async connection (issue 17): the unit of work of the writes that run on
the event loop (register, record a dose), PostgreSQL only.

Why: the reads on the event loop (registry/async_database.py) get by without a transaction
because their only write is their last statement. Register and record a dose make several
checks and writes that must commit together, with their audit event and, for a request with an
`Idempotency-Key`, its stored response (api/idempotency.py). This is BEGIN ... COMMIT on one
pooled connection of the same pool, with the same `Compiled` statements.

Invariants:
- One connection for the whole request: the idempotency claim (autocommit, before BEGIN, so a
  concurrent request with the key sees it), the transaction, the stored response, the COMMIT.
- The connection goes back to the pool idle: a unit closed inside its transaction rolls back
  first (nothing half-written), and a unit whose connection broke gives it back to be discarded.
- `begin(first, values)` sends `BEGIN; <first>` as one simple-protocol message (one round trip
  instead of two): psycopg's client-side binding (`AsyncClientCursor`) renders the values as
  escaped literals, since the simple protocol carries no parameters. Only these few statements
  are bound client-side; every other statement is server-side bound and prepared.
- COMMIT lost in flight raises `OutcomeUnknown` (the change may have been made), a connection
  lost before it `DatabaseUnavailable`, as `registry/database.commit` does for the sync unit.
- SQLite has no such unit: the same services run their sync path in a worker thread.
"""

from __future__ import annotations

import psycopg
from psycopg.rows import tuple_row

from registry import database, errors
from registry.async_database import CHECKOUT_TIMEOUT, AsyncDatabase, Compiled, Lease


class AsyncUnit:
    """BEGIN ... COMMIT on one pooled connection, lent on first use."""

    def __init__(self, db: AsyncDatabase) -> None:
        self.db = db
        self.lease: Lease | None = None
        self.in_transaction = False

    async def _conn(self) -> Lease:
        if self.lease is None:
            try:
                self.lease = Lease(await self.db.pool.getconn(timeout=CHECKOUT_TIMEOUT))
            except Exception as exc:  # PoolTimeout, or the server refused a new connection
                raise database.unavailable_error() from exc
        return self.lease

    async def autocommit(self, statement: Compiled, values: dict):
        """A statement committed on its own, before any transaction (the idempotency claim); rows."""
        assert not self.in_transaction
        lease = await self._conn()
        cur = await self._run(self.db._read(lease, statement, values))
        return await cur.fetchall() if cur.description is not None else []

    async def begin(self, first: Compiled | None = None, values: dict | None = None, *, plain_rows: bool = False) -> list[list]:
        """BEGIN, and the statements of `first` (`;`-separated, parameters bound client-side by
        psycopg, see the module docstring) in the same message; the rows of each of them (named
        tuples, or plain tuples with `plain_rows`: for results whose column names repeat)."""
        lease = await self._conn()
        lease.used = True
        if first is None:
            cur = lease.conn.cursor()
            await self._run(cur.execute("BEGIN"))
        else:
            cur = psycopg.AsyncClientCursor(lease.conn, row_factory=tuple_row) if plain_rows else \
                psycopg.AsyncClientCursor(lease.conn)
            await self._run(cur.execute("BEGIN; " + first.sql, first.params(values or {})))
        self.in_transaction = True
        out = []
        while True:
            if cur.description is not None:
                out.append(await cur.fetchall())
            if not cur.nextset():
                break
        return out

    async def one(self, statement: Compiled, values: dict):
        return await (await self._execute(statement, values)).fetchone()

    async def all(self, statement: Compiled, values: dict) -> list:
        return await (await self._execute(statement, values)).fetchall()

    async def execute(self, statement: Compiled, values: dict):
        return await self._execute(statement, values)

    async def _execute(self, statement: Compiled, values: dict):
        lease = await self._conn()
        lease.used = True
        return await self._run(lease.conn.execute(statement.sql, statement.params(values), prepare=True))

    @staticmethod
    async def _run(awaitable):
        try:
            return await awaitable
        except psycopg.OperationalError as exc:
            if database.unavailable(exc):
                raise database.unavailable_error() from exc
            raise

    async def commit(self) -> None:
        if not self.in_transaction:
            return
        self.in_transaction = False
        try:
            await self.lease.conn.execute("COMMIT")
        except Exception as exc:
            if database.unavailable(exc):
                raise errors.OutcomeUnknown(database.OUTCOME_UNKNOWN, retry_after=database.RETRY_AFTER_SECONDS) from exc
            raise

    async def rollback(self) -> None:
        if not self.in_transaction:
            return
        self.in_transaction = False
        lease = self.lease
        try:
            await lease.conn.execute("ROLLBACK")
        except Exception:  # noqa: BLE001 - a broken connection: the pool discards it on return
            pass

    async def close(self) -> None:
        """Give the connection back (rolled back first if a transaction is still open)."""
        await self.rollback()
        lease, self.lease = self.lease, None
        if lease is not None and lease.conn is not None:
            await self.db.pool.putconn(lease.conn)
