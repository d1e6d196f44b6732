"""Writing many rows inside the caller's transaction: `COPY` on PostgreSQL, executemany elsewhere.

Both run on the session's own connection, so the rows commit or roll back with everything else
in the unit of work (the chunk's audit event and the import run's progress).
"""

from __future__ import annotations

import json
import uuid
from datetime import date, datetime
from operator import itemgetter

from sqlalchemy import JSON, insert
from sqlalchemy.orm import Session
from sqlalchemy.sql.schema import Table


def insert_rows(session: Session, table: Table, rows: list[dict], columns: tuple[str, ...] | None = None) -> None:
    """`columns`: the ones the rows give (default: all of the table's), e.g. to leave a serial to its default."""
    if not rows:
        return
    conn = session.connection()
    if conn.dialect.name != "postgresql":
        session.execute(insert(table), rows)
        return
    columns = list(columns) if columns is not None else [c.name for c in table.columns]
    json_cols = {c.name for c in table.columns if isinstance(c.type, JSON) and c.name in columns}
    names = ", ".join(f'"{c}"' for c in columns)
    raw = conn.connection.driver_connection
    if json_cols:
        rows = [{**r, **{c: json.dumps(r.get(c)) for c in json_cols}} for r in rows]
    values = itemgetter(*columns) if len(columns) > 1 else (lambda r, c=columns[0]: (r[c],))
    with raw.cursor() as cur, cur.copy(f"COPY {table.name} ({names}) FROM STDIN") as cp:
        for r in rows:
            cp.write_row(values(r))


def insert_many(session: Session, parts: list[tuple[Table, list[dict], tuple[str, ...] | None]]) -> None:
    """`insert_rows` for several tables at once, `(table, rows, columns)` each. On PostgreSQL one
    statement, so one round trip: each table's rows travel as one JSON document, turned back into
    rows of the table's own types by `json_populate_recordset` in a data-modifying CTE (the
    statement's constraints are checked as a whole, at its end; a duplicate key raises the
    driver's IntegrityError like `COPY`). Building the JSON is C code (the json module); psycopg
    would dump typed arrays element by element in Python. Elsewhere `insert_rows` per table."""
    parts = [(t, rows, cols) for t, rows, cols in parts if rows]
    if not parts:
        return
    conn = session.connection()
    if conn.dialect.name != "postgresql":
        for table, rows, columns in parts:
            insert_rows(session, table, rows, columns)
        return
    sql, params = insert_many_sql(parts)
    with conn.connection.driver_connection.cursor() as cur:
        cur.execute(sql, params)


def insert_many_sql(parts: list[tuple[Table, list[dict], tuple[str, ...] | None]],
                    extra: list[tuple[str, list]] = ()) -> tuple[str, list]:
    """PostgreSQL: `insert_many`'s one statement (SQL with `%s` placeholders, its parameters) for
    non-empty `parts`, for a caller on another connection (the batch upload on the event loop,
    registry/sync/batch_async.py). `extra`: more data-modifying statements, (sql, params) each,
    run first as CTEs of the same statement."""
    inserts, params = [q for q, _ in extra], [v for _, values in extra for v in values]
    for table, rows, columns in parts:
        columns = list(columns) if columns is not None else [c.name for c in table.columns]
        names = ", ".join(f'"{c}"' for c in columns)
        inserts.append(f"INSERT INTO {table.name} ({names}) SELECT {names} FROM json_populate_recordset(NULL::{table.name}, %s)")
        get = itemgetter(*columns) if len(columns) > 1 else (lambda r, c=columns[0]: (r[c],))
        params.append(_JSON.encode([dict(zip(columns, get(r))) for r in rows]))
    sql = inserts[-1] if len(inserts) == 1 else (
        "WITH " + ", ".join(f"w{i} AS ({q})" for i, q in enumerate(inserts[:-1])) + " " + inserts[-1])
    return sql, params


def _as_json(value):
    """What PostgreSQL's input functions read back: bytea as hex, dates and times in ISO 8601
    (with their offset), UUIDs as text."""
    if isinstance(value, bytes):
        return "\\x" + value.hex()
    if isinstance(value, (date, datetime)):
        return value.isoformat()
    if isinstance(value, uuid.UUID):
        return str(value)
    raise TypeError(f"cannot send {type(value).__name__} as JSON")


_JSON = json.JSONEncoder(default=_as_json, separators=(",", ":"), ensure_ascii=False, check_circular=False)


def rows_by_ids(session: Session, table: Table, columns: tuple[str, ...], key: str, ids: list, where: dict | None = None) -> list:
    """`columns` of the rows whose `key` is in `ids` (and whose columns equal `where`'s values).
    On PostgreSQL one `= ANY(array)` per 20,000 ids straight through the driver: an expanded
    `IN (...)` of thousands of parameters costs more to build than to run."""
    if not ids:
        return []
    where = where or {}
    conn = session.connection()
    out: list = []
    if conn.dialect.name == "postgresql":
        sql = (f"SELECT {', '.join(columns)} FROM {table.name} WHERE {key} = ANY(%s)"
               + "".join(f" AND {c} = %s" for c in where))
        with conn.connection.driver_connection.cursor() as cur:
            for i in range(0, len(ids), 20000):
                out += cur.execute(sql, [ids[i:i + 20000], *where.values()]).fetchall()
        return out
    from sqlalchemy import select

    for i in range(0, len(ids), 500):
        q = select(*[table.c[c] for c in columns]).where(table.c[key].in_(ids[i:i + 500]),
                                                          *[table.c[c] == v for c, v in where.items()])
        out += [tuple(r) for r in session.execute(q)]
    return out


def integrity_errors(session: Session) -> tuple[type[Exception], ...]:
    """What a duplicate key raises here: SQLAlchemy's IntegrityError, and the driver's own (the
    `COPY` of `insert_rows` runs on the driver's connection, outside SQLAlchemy)."""
    from sqlalchemy.exc import IntegrityError

    dbapi = session.get_bind().dialect.dbapi
    driver = getattr(dbapi, "IntegrityError", None)
    return (IntegrityError, driver) if isinstance(driver, type) else (IntegrityError,)


def driver_rows(session: Session, sql: str, params: list) -> list[tuple]:
    """PostgreSQL only: `sql` (with %s placeholders; arrays for `= ANY(%s)`) straight through the
    driver on the session's connection, for reads of many rows where SQLAlchemy's per-row
    processing costs more than the query."""
    with session.connection().connection.driver_connection.cursor() as cur:
        return cur.execute(sql, params).fetchall()
