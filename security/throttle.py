"""Login throttling that works across workers and hosts: failures are rows in the database.

The scheme (issue 18: a stranger must not be able to lock the owner out), for staff and citizens:
- **pair**: failures of one account from one client. Past `per_pair` within the window, that
  client is refused for that account. This is what slows a guesser, and it cannot touch the owner
  logging in from anywhere else.
- **account**: failures of the account from every client together, a slower ceiling (`per_account`,
  ten times the pair limit by default) against guessing spread over many addresses. Past it, the
  account is refused only to clients that have not logged into it within `known_for`: the owner's
  own device still gets in (subject to its own pair limit), an attacker's new addresses do not.
- **client**: failures from one client over all accounts (`per_client`), against spraying one
  password over many accounts.
A successful login clears its pair's failures and marks the client as known to the account.
An administrator's **unlock** (`unlock`) writes an `unlock` marker for the account: failures of the
account and of its pairs before the marker no longer count (the client budget is untouched: it
guards other accounts). The pair keys hold the client address, so they cannot be found to delete.

Invariants:
- Keys are SHA-256 digests of a namespace and the values (`account:<username>` ...), so the table
  holds no usernames or addresses in clear; callers with guessable account names key them first
  (registry/citizens/service.py).
- A refused attempt is refused *before* the password is checked, so a throttled guesser learns
  nothing from further guesses.
- One query reads every count (`refused`).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy import Index, Integer, String, and_, delete, func, insert, or_, select
from sqlalchemy.orm import Mapped, Session, mapped_column

from security.orm import Base, UTCDateTime


class LoginFailureRow(Base):
    __tablename__ = "login_failures"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    key: Mapped[str] = mapped_column(String(64))  # a failure key, or a `known` key (the time of a successful login)
    at: Mapped[datetime] = mapped_column(UTCDateTime)

    __table_args__ = (Index(None, "key", "at"),)


def throttle_key(kind: str, value: str) -> str:
    return hashlib.sha256(f"{kind}:{value.lower()}".encode()).hexdigest()


@dataclass(frozen=True)
class Limits:
    window: timedelta
    per_pair: int
    per_account: int
    per_client: int
    known_for: timedelta

    @classmethod
    def of(cls, login) -> Limits:
        """From `settings.login` (registry/settings.LoginSettings)."""
        return cls(timedelta(seconds=login.window_seconds), login.max_failures_per_pair, login.max_failures_per_account,
                   login.max_failures_per_client, timedelta(days=login.known_client_days))


@dataclass(frozen=True)
class Keys:
    account: str
    client: str
    pair: str
    known: str
    unlock: str

    @classmethod
    def of(cls, namespace: str, account: str, client: str) -> Keys:
        """`namespace` "" for staff, "citizen-" for citizens: separate budgets."""
        pair_value = f"{account.lower()}\x00{client}"
        return cls(throttle_key(f"{namespace}account", account), throttle_key(f"{namespace}client", client),
                   throttle_key(f"{namespace}pair", pair_value), throttle_key(f"{namespace}known", pair_value),
                   throttle_key(f"{namespace}unlock", account))


def refused(session: Session, keys: Keys, limits: Limits) -> str | None:
    """Why this attempt is refused before its password is checked ('pair', 'client', 'account'), or None."""
    t = LoginFailureRow.__table__
    now = datetime.now(UTC)
    rows = session.execute(
        select(t.c.key, func.count()).where(or_(
            and_(t.c.key.in_([keys.pair, keys.account]), t.c.at >= _counted_since(keys.unlock, now - limits.window)),
            and_(t.c.key == keys.client, t.c.at >= now - limits.window),
            and_(t.c.key == keys.known, t.c.at >= now - limits.known_for))).group_by(t.c.key)).all()
    counts = dict(rows)
    if counts.get(keys.pair, 0) >= limits.per_pair:
        return "pair"
    if counts.get(keys.client, 0) >= limits.per_client:
        return "client"
    if counts.get(keys.account, 0) >= limits.per_account and not counts.get(keys.known):
        return "account"
    return None


def record_failure(session: Session, keys: Keys) -> None:
    now = datetime.now(UTC)
    session.execute(insert(LoginFailureRow.__table__), [{"key": k, "at": now} for k in (keys.pair, keys.account, keys.client)])


def record_success(session: Session, keys: Keys) -> None:
    """Clear the pair's failures and remember the client as known to the account (one row per pair)."""
    t = LoginFailureRow.__table__
    session.execute(delete(t).where(t.c.key.in_([keys.pair, keys.known])))
    session.execute(insert(t), [{"key": keys.known, "at": datetime.now(UTC)}])


def _counted_since(unlock_key: str, window_start: datetime):
    """The start of the window, or the account's latest unlock within it (a SQL expression)."""
    t = LoginFailureRow.__table__
    latest = select(func.max(t.c.at)).where(t.c.key == unlock_key, t.c.at >= window_start).scalar_subquery()
    return func.coalesce(latest, window_start, type_=UTCDateTime)


def unlock(session: Session, namespace: str, account: str, limits: Limits) -> int:
    """An administrator clears the account's failed logins (and those of its pairs) -> how many
    counted until now (0: nothing was locked or counting, and no marker is written)."""
    t = LoginFailureRow.__table__
    now = datetime.now(UTC)
    account_key, unlock_key = throttle_key(f"{namespace}account", account), throttle_key(f"{namespace}unlock", account)
    counted = session.execute(select(func.count()).where(
        t.c.key == account_key, t.c.at >= _counted_since(unlock_key, now - limits.window))).scalar_one()
    if counted:
        session.execute(insert(t), [{"key": unlock_key, "at": now}])
    return counted
