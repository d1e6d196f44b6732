"""Queries on console sessions. A session is looked up by the hash of its token only."""

from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from registry.console_sessions.models import ConsoleSession
from registry.users.models import User


def live(session: Session, session_id: str, now: datetime) -> tuple[ConsoleSession, User | None] | None:
    """The session (and its staff user, if any) if it has not ended and its lifetime has not run
    out (the idle timeout is the service's decision: it needs the settings)."""
    row = session.execute(
        select(ConsoleSession, User).outerjoin(User, User.id == ConsoleSession.user_id)
        .where(ConsoleSession.id == session_id, ConsoleSession.ended_at.is_(None), ConsoleSession.expires_at > now)
    ).first()
    return (row[0], row[1]) if row else None


def end(session: Session, session_id: str, now: datetime) -> int:
    return session.execute(update(ConsoleSession).where(ConsoleSession.id == session_id, ConsoleSession.ended_at.is_(None))
                           .values(ended_at=now)).rowcount


def end_all_of(session: Session, user_id: uuid.UUID, now: datetime) -> int:
    return session.execute(update(ConsoleSession).where(ConsoleSession.user_id == user_id, ConsoleSession.ended_at.is_(None))
                           .values(ended_at=now)).rowcount
