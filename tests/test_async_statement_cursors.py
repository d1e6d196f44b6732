"""The async pool's statement cursors (registry/async_database.py `_cursor`): one psycopg cursor per
(connection, statement), re-used so that psycopg keeps its adaptation state between executions.
Re-use must never change an answer: each execution returns its own rows, a failed execution
leaves the next one unaffected, and a statement is never answered from another's cursor."""

from __future__ import annotations

import asyncio
import uuid

import psycopg
import pytest
from sqlalchemy import Integer, Uuid, bindparam, literal, select

from conftest import PG_URL
from registry.async_database import AsyncDatabase, Compiled, _cursor

pytestmark = pytest.mark.skipif(not PG_URL, reason="the async pool exists on PostgreSQL only")

ECHO = Compiled.of(select(bindparam("x", type_=Uuid()).label("x"), (literal(10) / bindparam("d", type_=Integer)).label("q")))
OTHER = Compiled.of(select(bindparam("x", type_=Uuid()).label("y")))


def _run(check):
    async def main():
        db = AsyncDatabase(PG_URL, max_size=2)
        await db.open()
        try:
            await check(db)
        finally:
            await db.close()

    asyncio.run(main())


def test_each_execution_answers_its_own_values_on_the_same_cursor():
    async def check(db):
        a, b = uuid.uuid4(), uuid.uuid4()
        async with db.statements() as lease:
            first = await db.one(lease, ECHO, {"x": a, "d": 2})
            cur = _cursor(lease.conn, ECHO)
            second = await db.one(lease, ECHO, {"x": b, "d": 5})
            assert _cursor(lease.conn, ECHO) is cur  # re-used, not made again
            assert (first.x, first.q, second.x, second.q) == (a, 5, b, 2)
            assert (await db.one(lease, OTHER, {"x": a})).y == a  # another statement: its own cursor
            assert _cursor(lease.conn, OTHER) is not cur
            assert (await db.all(lease, ECHO, {"x": a, "d": 1}))[0].x == a

    _run(check)


def test_a_failed_execution_leaves_the_next_one_correct():
    async def check(db):
        a = uuid.uuid4()
        async with db.statements() as lease:
            await db.one(lease, ECHO, {"x": uuid.uuid4(), "d": 1})
            with pytest.raises(psycopg.errors.DivisionByZero):
                await db.one(lease, ECHO, {"x": uuid.uuid4(), "d": 0})
            row = await db.one(lease, ECHO, {"x": a, "d": 10})
            assert (row.x, row.q) == (a, 1)

    _run(check)


def test_cursors_go_with_their_connection():
    """A new connection (after the pool discarded a broken one) starts with no cursors: nothing of
    a dead connection is used again."""
    async def check(db):
        async with db.statements() as lease:
            await db.one(lease, ECHO, {"x": uuid.uuid4(), "d": 1})
            old = lease.conn
            await old.close()  # as a terminated backend would leave it
        async with db.statements() as lease:
            row = await db.one(lease, ECHO, {"x": uuid.uuid4(), "d": 1})  # retried on a fresh connection
            assert row.q == 10 and lease.conn is not old
            assert _cursor(lease.conn, ECHO).connection is lease.conn

    _run(check)
