"""Reading audit rows that may be damaged, one value at a time (for the sealer and the verifier).

SQLite keeps any value in any column, so a row written behind the registry's back can hold an
impossible date, a malformed UUID, broken JSON or a value of the wrong type. Read through the
column types as usual, the first such value ends the whole read with an exception: the sealer
would stall on it and the verifier would crash. Here the values come back raw and each is
converted by its own column type's result processor, so a value that cannot be read damages
its row (reported by column name, never by value) and the rest of the read goes on.
"""

from __future__ import annotations

from typing import Iterator

from sqlalchemy import Boolean, Integer, LargeBinary, String, Table, select, type_coerce
from sqlalchemy.orm import Session
from sqlalchemy.sql import Select
from sqlalchemy.types import NullType


def raw_select(table: Table) -> Select:
    """SELECT of every column of `table`, with no result processing (add WHERE, ORDER BY, LIMIT)."""
    return select(*[type_coerce(c, NullType()).label(c.name) for c in table.columns])


def raw(column):
    """A column for ORDER BY / WHERE in a `raw_select` that must not be processed either."""
    return type_coerce(column, NullType())


def read(session: Session, stmt: Select, table: Table, *, chunk: int = 5000) -> Iterator[tuple[int, dict | None, dict, str | None]]:
    """Rows of a `raw_select(table)` as (row number, values or None if damaged, raw values, the
    first column that could not be read)."""
    dialect = session.get_bind().dialect
    cols = list(table.columns)
    procs = [c.type.dialect_impl(dialect).result_processor(dialect, None) for c in cols]
    names = [c.name for c in cols]
    for n, stored in enumerate(session.execute(stmt).yield_per(chunk)):
        out, bad = {}, None
        for c, proc, value in zip(cols, procs, stored):
            try:
                if value is not None and not plausible(c.type, value):
                    raise TypeError
                out[c.name] = proc(value) if proc is not None and value is not None else value
            except Exception:  # noqa: BLE001 - any failure of a type to read a stored value is damage
                bad = c.name
                break
        yield n, (None if bad else out), dict(zip(names, stored)), bad


def plausible(type_, value) -> bool:
    """Whether a stored value has a type its column can hold (SQLite keeps any value in any
    column, and some types' readers accept anything: `bool('yes')` is True)."""
    if isinstance(type_, Boolean):
        return value in (0, 1)
    if isinstance(type_, String):
        return isinstance(value, str)
    if isinstance(type_, Integer):
        return isinstance(value, int) and not isinstance(value, bool)
    if isinstance(type_, LargeBinary):
        return isinstance(value, (bytes, memoryview))
    return True


def hashable(value) -> object:
    """A raw value usable as a dict key (to match raw ids across tables)."""
    try:
        hash(value)
        return value
    except TypeError:
        return repr(type(value))
