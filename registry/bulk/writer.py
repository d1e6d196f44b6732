"""Writing many rows inside the caller's transaction: `COPY` on PostgreSQL, executemany elsewhere.

Both run on the session's own connection, so the rows commit or roll back with everything else
in the unit of work (the chunk's audit event and the import run's progress).
"""

from __future__ import annotations

import json

from sqlalchemy import JSON, insert
from sqlalchemy.orm import Session
from sqlalchemy.sql.schema import Table


def insert_rows(session: Session, table: Table, rows: list[dict]) -> None:
    if not rows:
        return
    conn = session.connection()
    if conn.dialect.name != "postgresql":
        session.execute(insert(table), rows)
        return
    columns = [c.name for c in table.columns]
    json_cols = {c.name for c in table.columns if isinstance(c.type, JSON)}
    names = ", ".join(f'"{c}"' for c in columns)
    raw = conn.connection.driver_connection
    with raw.cursor() as cur, cur.copy(f"COPY {table.name} ({names}) FROM STDIN") as cp:
        for r in rows:
            cp.write_row(tuple(json.dumps(r.get(c)) if c in json_cols else r.get(c) for c in columns))
