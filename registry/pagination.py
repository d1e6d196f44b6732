"""Opaque keyset cursors: `(created_at, id)` of the last row, base64url-encoded JSON.

A cursor carries no patient data (a timestamp and an opaque row id) and is validated on the way
in; a tampered cursor is a 422 on `cursor`, never a server error.
"""

from __future__ import annotations

import base64
import json
import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Generic, TypeVar

from sqlalchemy import and_, or_

from registry.errors import InvalidInput

T = TypeVar("T")


@dataclass
class Page(Generic[T]):
    items: list[T]
    next_cursor: str | None


def encode(created_at: datetime, row_id: uuid.UUID) -> str:
    raw = json.dumps([created_at.isoformat(), str(row_id)]).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode(cursor: str) -> tuple[datetime, uuid.UUID]:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        ts, rid = json.loads(raw)
        return datetime.fromisoformat(ts), uuid.UUID(rid)
    except Exception:
        raise InvalidInput("cursor is not valid", field="cursor") from None


def newest_first(session, query, ts_column, id_column, *, cursor: str | None, limit: int):
    """Run `query` as one keyset page, newest first by (timestamp, id), and return
    (rows, next cursor or None). Fetches `limit + 1` rows to know whether a next page exists."""
    if cursor:
        ts, rid = decode(cursor)
        query = query.where(or_(ts_column < ts, and_(ts_column == ts, id_column < rid)))
    rows = session.execute(query.order_by(ts_column.desc(), id_column.desc()).limit(limit + 1)).all()
    if len(rows) <= limit:
        return rows, None
    last = rows[limit - 1]
    return rows[:limit], encode(last._mapping[ts_column.name], last._mapping[id_column.name])
