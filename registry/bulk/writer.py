"""Writing many rows inside the caller's transaction: `COPY` on PostgreSQL, executemany elsewhere.

Both run on the session's own connection, so the rows commit or roll back with everything else
in the unit of work (the chunk's audit event and the import run's progress).
"""

from __future__ import annotations

import json
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
