"""Administrators' actions on staff accounts (issue 14 "Administrators", issue 16 item 5):
deactivate, reactivate, unlock, password reset, end all sessions. The API and the console call
these same functions.

Invariants:
- Scoped like the account list: a provincial administrator reaches the accounts of its province,
  a national one every account. Any other account answers NotFound, exactly as one that does not
  exist (404, never 403).
- One audit event per call (`user.<action>`), also for a refusal: not found, already in that state
  (Conflict, 409), or an administrator deactivating its own account (InvalidInput).
- Deactivation, a password reset and "end all sessions" revoke every access token of the account
  (its token generation moves on, registry/users/revocation.py) and end its console sessions;
  they take effect when the caller commits. Reactivation revives no old token or session.
- A reset password is random (at least 20 characters, above the configured minimum), checked
  against the same policy as any other, returned once to the caller and stored only as its
  argon2id hash. It is never logged or audited.
- Services never commit.
"""

from __future__ import annotations

import secrets
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy.orm import Session

from registry.console_sessions import repository as console_sessions
from registry.errors import Conflict, InvalidInput, NotFound
from registry.runtime import Runtime
from registry.users import revocation
from registry.users.models import User
from registry.users.schemas import UserView
from registry.users.service import view
from security import throttle
from security.access.principal import Scope
from security.audit import trail as audit
from security.audit.trail import AuditTrail
from security.passwords import PasswordRejected, check_policy

DEACTIVATE, REACTIVATE, UNLOCK = "user.deactivate", "user.reactivate", "user.unlock"
PASSWORD_RESET, END_SESSIONS = "user.password_reset", "user.sessions_end"
_ALPHABET = "abcdefghjkmnpqrstuvwxyz23456789"  # no 0/o, 1/l/i: read aloud or copied by hand


@dataclass(frozen=True)
class PasswordReset:
    account: UserView
    password: str  # shown once to the administrator; never stored in clear, logged or audited


def _account(session: Session, trail: AuditTrail, action: str, user_id: uuid.UUID, within: Scope) -> User:
    user = session.get(User, user_id)
    if user is None or (within.level != "national" and user.province != within.province):
        trail.record(session, action, audit.NOT_FOUND, resource_type="User", resource_id=user_id)
        raise NotFound("no such account in your jurisdiction")
    return user


def _conflict(session: Session, trail: AuditTrail, action: str, user: User, message: str) -> Conflict:
    trail.record(session, action, audit.CONFLICT, resource_type="User", resource_id=user.id, detail={"reason": message})
    return Conflict(message)


def _revoke(session: Session, user: User) -> dict:
    """End every token and console session of the account -> audit detail."""
    generation = revocation.bump(session, user)
    ended = console_sessions.end_all_of(session, user.id, datetime.now(UTC))
    return {"token_generation": generation, "sessions_ended": ended}


def find(session: Session, user_id: uuid.UUID, *, within: Scope) -> UserView:
    """An account in the administrator's jurisdiction, for a confirmation page (changes nothing,
    like the account list it comes from, which is not audited either)."""
    user = session.get(User, user_id)
    if user is None or (within.level != "national" and user.province != within.province):
        raise NotFound("no such account in your jurisdiction")
    return view(user)


def deactivate(session: Session, trail: AuditTrail, user_id: uuid.UUID, *, within: Scope) -> UserView:
    """The account can no longer log in; its tokens and console sessions stop working now."""
    user = _account(session, trail, DEACTIVATE, user_id, within)
    if trail.context.principal is not None and user.id == trail.context.principal.user_id:
        trail.record(session, DEACTIVATE, audit.INVALID, resource_type="User", resource_id=user_id,
                     detail={"reason": "own account"})
        raise InvalidInput("you cannot deactivate your own account", field="user_id")
    if not user.active:
        raise _conflict(session, trail, DEACTIVATE, user, "the account is already deactivated")
    user.active = False
    detail = _revoke(session, user)
    trail.record(session, DEACTIVATE, audit.SUCCESS, resource_type="User", resource_id=user.id, detail=detail)
    return view(user)


def reactivate(session: Session, trail: AuditTrail, user_id: uuid.UUID, *, within: Scope) -> UserView:
    """The account may log in again (tokens and sessions from before stay revoked)."""
    user = _account(session, trail, REACTIVATE, user_id, within)
    if user.active:
        raise _conflict(session, trail, REACTIVATE, user, "the account is already active")
    user.active = True
    trail.record(session, REACTIVATE, audit.SUCCESS, resource_type="User", resource_id=user.id)
    return view(user)


def unlock(session: Session, rt: Runtime, trail: AuditTrail, user_id: uuid.UUID, *, within: Scope) -> UserView:
    """Clear the account's failed logins (security/throttle.py `unlock`): the owner may try again now."""
    user = _account(session, trail, UNLOCK, user_id, within)
    cleared = throttle.unlock(session, "", user.username, throttle.Limits.of(rt.settings.login))
    if not cleared:
        raise _conflict(session, trail, UNLOCK, user, "the account has no failed logins to clear")
    trail.record(session, UNLOCK, audit.SUCCESS, resource_type="User", resource_id=user.id, detail={"failures_cleared": cleared})
    return view(user)


def reset_password(session: Session, rt: Runtime, trail: AuditTrail, user_id: uuid.UUID, *, within: Scope) -> PasswordReset:
    """A new random password (returned once); every token and console session of the account ends."""
    user = _account(session, trail, PASSWORD_RESET, user_id, within)
    if not user.active:
        raise _conflict(session, trail, PASSWORD_RESET, user, "the account is deactivated; reactivate it first")
    password = new_password(rt, user.username)
    user.password_hash = rt.hasher.hash(password)
    detail = _revoke(session, user)
    trail.record(session, PASSWORD_RESET, audit.SUCCESS, resource_type="User", resource_id=user.id, detail=detail)
    return PasswordReset(view(user), password)


def end_sessions(session: Session, trail: AuditTrail, user_id: uuid.UUID, *, within: Scope) -> UserView:
    """Every access token and console session of the account stops working; the account stays active."""
    user = _account(session, trail, END_SESSIONS, user_id, within)
    detail = _revoke(session, user)
    trail.record(session, END_SESSIONS, audit.SUCCESS, resource_type="User", resource_id=user.id, detail=detail)
    return view(user)


def new_password(rt: Runtime, username: str) -> str:
    """Random, in groups of five for reading out, at least 20 characters and the configured minimum."""
    s = rt.settings.passwords
    length = max(20, s.min_length)
    for _ in range(10):
        raw = "".join(secrets.choice(_ALPHABET) for _ in range(length))
        password = "-".join(raw[i:i + 5] for i in range(0, length, 5))
        try:
            check_policy(password, username=username, min_length=s.min_length, breached_file=s.breached_file)
            return password
        except PasswordRejected:
            continue
    raise RuntimeError("could not generate a password the policy accepts")  # 31^20 choices: not reached
