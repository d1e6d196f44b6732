"""Console sessions: server-side, so that logging out (or an administrator deactivating the
account) ends them at once, wherever the cookie went.

Invariants:
- Logging in is `registry.users.service.authenticate`, the same argon2id check, throttle and
  `auth.login` audit event as the API's token endpoint; a guardian logs in through
  `registry.citizens.service.login` (health ID and access code, its throttle, `citizen.login`), and
  the session ends when the access code is reissued, as the citizen token does.
- The cookie carries a 256-bit random token; the table keeps its SHA-256 only.
- A session works until the first of: logout (`ended_at`), its absolute lifetime
  (`expires_at`), the idle timeout since `last_seen_at`, or its user's deactivation. Then it is
  refused exactly like no session at all.
- The principal is rebuilt from the user row on every request, so a changed role or scope
  applies at the next page, not at the next login.
- Each session has its own CSRF secret; `csrf_ok` compares in constant time.
- Services never commit: the caller's unit of work does.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import uuid
from datetime import UTC, datetime, timedelta

from sqlalchemy.orm import Session

from registry.citizens import repository as citizen_repo
from registry.citizens import service as citizens
from registry.console_sessions import repository
from registry.console_sessions.models import ConsoleSession
from registry.console_sessions.schemas import LiveSession, StartedSession
from registry.context import ServiceContext
from registry.runtime import Runtime
from registry.users.service import authenticate, principal_of
from security import tokens
from security.access.permissions import CITIZEN_ROLE
from security.access.principal import Principal, Scope
from security.audit import trail as audit
from security.audit.trail import AuditTrail

# A session seen within this many seconds is not written again: a page costs no UPDATE.
_TOUCH_EVERY = 30


def session_id(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def start(session: Session, rt: Runtime, trail: AuditTrail, username: str, password: str, client: str) -> StartedSession:
    """Log in (throttled, audited) and open a session. Raises what `authenticate` raises."""
    user = authenticate(session, rt, trail, username, password, client)
    return _open(session, rt, user_id=user.id)


def start_citizen(ctx: ServiceContext, health_id: str, access_code: str, client: str) -> StartedSession:
    """A guardian's login (the citizen API's service) and session, bound to the child and to the
    access code's generation. Raises what `citizens.service.login` raises."""
    issued = citizens.login(ctx, health_id, access_code, client)
    claims = tokens.verify(ctx.runtime.tokens, issued.access_token)
    return _open(ctx.session, ctx.runtime, patient_id=uuid.UUID(claims["sub"]), generation=int(claims["gen"]))


def _open(session: Session, rt: Runtime, *, user_id=None, patient_id=None, generation=None) -> StartedSession:
    token, now = secrets.token_urlsafe(32), datetime.now(UTC)
    lifetime = timedelta(minutes=rt.settings.console.lifetime_minutes)
    row = ConsoleSession(id=session_id(token), user_id=user_id, patient_id=patient_id, citizen_generation=generation,
                         created_at=now, last_seen_at=now, expires_at=now + lifetime, csrf_secret=secrets.token_urlsafe(32))
    session.add(row)
    session.flush()
    return StartedSession(token=token, csrf=row.csrf_secret, max_age=int(lifetime.total_seconds()))


def resolve(session: Session, rt: Runtime, token: str | None) -> LiveSession | None:
    """The live session behind a cookie's token, or None (ended, expired, idle, unknown, user inactive)."""
    if not token or len(token) > 128:
        return None
    now = datetime.now(UTC)
    found = repository.live(session, session_id(token), now)
    if found is None:
        return None
    row, user = found
    if now - _aware(row.last_seen_at) > timedelta(minutes=rt.settings.console.idle_minutes):
        return None
    if row.patient_id is not None:
        patient, generation = citizen_repo.patient_and_generation(session, row.patient_id)
        if patient is None or generation != row.citizen_generation:  # the access code was reissued
            return None
        principal = Principal.build(patient.id, CITIZEN_ROLE, CITIZEN_ROLE,
                                    Scope("patient", patient.id.hex, patient.province, patient.district))
    elif user is not None and user.active:
        principal = principal_of(user)
    else:
        return None
    if (now - _aware(row.last_seen_at)).total_seconds() > _TOUCH_EVERY:
        row.last_seen_at = now
    return LiveSession(id=row.id, principal=principal, csrf=row.csrf_secret, generation=row.citizen_generation)


def end(session: Session, trail: AuditTrail, live: LiveSession) -> None:
    """Logout: the session stops working server-side, whoever holds the cookie."""
    repository.end(session, live.id, datetime.now(UTC))
    trail.record(session, "auth.logout", audit.SUCCESS, resource_type="Patient" if live.generation is not None else "User",
                 resource_id=live.principal.user_id)


def csrf_ok(expected: str | None, submitted: str | None) -> bool:
    return bool(expected) and bool(submitted) and hmac.compare_digest(expected.encode(), submitted.encode())


def _aware(t: datetime) -> datetime:
    return t if t.tzinfo else t.replace(tzinfo=UTC)
