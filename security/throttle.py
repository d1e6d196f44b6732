"""Login throttling that works across workers and hosts: failures are rows in the database.

Invariants:
- Keys are SHA-256 digests of `account:<username>` and `client:<address>`, so the table holds
  no usernames or addresses in clear.
- A key over its limit within the window is refused *before* the password is checked, so a
  throttled attacker learns nothing from further guesses.
- A successful login clears the account's failures (not the client's).
"""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime, timedelta

from sqlalchemy import Index, Integer, String, delete, func, insert, select
from sqlalchemy.orm import Mapped, Session, mapped_column

from security.orm import Base, UTCDateTime


class LoginFailureRow(Base):
    __tablename__ = "login_failures"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    key: Mapped[str] = mapped_column(String(64))
    at: Mapped[datetime] = mapped_column(UTCDateTime)

    __table_args__ = (Index(None, "key", "at"),)


def throttle_key(kind: str, value: str) -> str:
    return hashlib.sha256(f"{kind}:{value.lower()}".encode()).hexdigest()


def failures_since(session: Session, key: str, window: timedelta) -> int:
    t = LoginFailureRow.__table__
    return session.execute(select(func.count()).select_from(t).where(t.c.key == key, t.c.at >= datetime.now(UTC) - window)).scalar_one()


def record_failure(session: Session, keys: list[str]) -> None:
    now = datetime.now(UTC)
    session.execute(insert(LoginFailureRow.__table__), [{"key": k, "at": now} for k in keys])


def clear(session: Session, key: str) -> None:
    session.execute(delete(LoginFailureRow.__table__).where(LoginFailureRow.__table__.c.key == key))
