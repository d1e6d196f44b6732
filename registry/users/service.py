"""Staff accounts: creation with the password policy, listing, and login.

Invariants:
- A role is bound to a scope level it allows (security/access/permissions.ROLE_SCOPE_LEVELS);
  a clinic worker is always bound to exactly one facility.
- Login is throttled per (account, client) pair, per client, and per account for clients the
  account has not logged in from (security/throttle.py) before the password is checked, so a
  stranger cannot lock the owner out; an unknown username costs one hash like a known one; every attempt is audited (`auth.login`).
- Login is the only place a password hash is computed: tokens carry the principal afterwards,
  and the account's token generation (`tgen`), which revokes them when it moves on.
- Administrators' actions on accounts (deactivate, reset, unlock...) are in actions.py.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from registry.errors import Conflict, InvalidInput, TooManyAttempts, Unauthenticated
from registry.facilities.models import Facility
from registry.runtime import Runtime
from registry.users import revocation
from registry.users.models import User
from registry.users.schemas import TokenResponse, UserCreate, UserView
from security import throttle, tokens
from security.access.permissions import ROLE_SCOPE_LEVELS
from security.access.principal import AccessContext, Principal, Scope
from security.audit import trail as audit
from security.audit.trail import AuditTrail
from security.passwords import PasswordRejected, check_policy


def scope_of(user: User) -> Scope:
    return Scope(user.scope_level, user.scope_code, user.province, user.district)


def principal_of(user: User) -> Principal:
    return Principal.build(user.id, user.username, user.role, scope_of(user))


def _resolve_scope(session: Session, rt: Runtime, role: str, code: str) -> tuple[str, str | None, str | None, str | None]:
    """-> (level, province, district, facility) or InvalidInput on scope_code."""
    allowed = ROLE_SCOPE_LEVELS.get(role, frozenset())
    facility = session.get(Facility, code)
    if facility is not None:
        if not facility.active:
            raise InvalidInput("this facility is retired; no new accounts are bound to it", field="scope_code")
        place = rt.jurisdictions.get(facility.jurisdiction_code, session)
        if place is not None and not place.active:
            raise InvalidInput("this facility's place is retired; no new accounts are bound to it", field="scope_code")
        level, province, district = "facility", facility.province, facility.district
    else:
        node = rt.jurisdictions.get(code, session)
        if node is None:
            raise InvalidInput("no facility or jurisdiction has this code", field="scope_code")
        if not node.active:
            raise InvalidInput("this jurisdiction is retired; no new accounts are bound to it", field="scope_code")
        level = "national" if node.level == "country" else node.level
        province, district = node.province, node.district
    if level not in allowed:
        raise InvalidInput(f"role {role} must be bound to a {' or '.join(sorted(allowed))}", field="scope_code")
    return level, province, district, (code if level == "facility" else None)


def create_user(session: Session, rt: Runtime, data: UserCreate, *, within: Scope | None = None) -> UserView:
    """`within`: the creating administrator's scope; a provincial administrator creates
    accounts in its own province only."""
    level, province, district, facility = _resolve_scope(session, rt, data.role.value, data.scope_code)
    if within is not None and within.level != "national" and (level == "national" or province != within.province):
        raise InvalidInput("this scope is outside your jurisdiction", field="scope_code")
    try:
        check_policy(data.password, username=data.username, min_length=rt.settings.passwords.min_length,
                     breached_file=rt.settings.passwords.breached_file)
    except PasswordRejected as exc:
        raise InvalidInput(str(exc), field="password") from None
    user = User(
        id=uuid.uuid4(), username=data.username, display_name=data.display_name, password_hash=rt.hasher.hash(data.password),
        role=data.role.value, scope_level=level, scope_code=data.scope_code, facility_code=facility,
        province=province, district=district, active=True, created_at=datetime.now(UTC),
    )
    session.add(user)
    try:
        with session.begin_nested():
            session.flush()
    except IntegrityError:
        raise Conflict("this username is taken", field="username") from None
    return view(user)


def view(user: User) -> UserView:
    return UserView(id=user.id, username=user.username, display_name=user.display_name, role=user.role,
                    scope_level=user.scope_level, scope_code=user.scope_code, active=user.active, created_at=user.created_at)


def list_users(session: Session, *, province: str | None = None) -> list[UserView]:
    q = select(User).order_by(User.username)
    if province:
        q = q.where(User.province == province)
    return [view(u) for u in session.scalars(q)]


def login(session: Session, rt: Runtime, trail: AuditTrail, username: str, password: str, client: str) -> TokenResponse:
    user = authenticate(session, rt, trail, username, password, client)
    token, ttl = tokens.issue(rt.tokens, str(user.id), {
        "name": user.username, "role": user.role, "scope_level": user.scope_level, "scope_code": user.scope_code,
        "prov": user.province, "dist": user.district, "tgen": user.token_generation,
    })
    return TokenResponse(access_token=token, expires_in=ttl, role=user.role, scope_level=user.scope_level, scope_code=user.scope_code)


def authenticate(session: Session, rt: Runtime, trail: AuditTrail, username: str, password: str, client: str) -> User:
    """The password check behind every login (API token and console session): throttled, audited."""
    s = rt.settings
    keys = throttle.Keys.of("", username, client)
    account_key = keys.account
    why = throttle.refused(session, keys, throttle.Limits.of(s.login))
    if why is not None:
        trail.record(session, "auth.login", audit.DENIED, resource_type="User",
                     detail={"reason": "throttled", "throttle": why, "account_key": account_key[:16]})
        raise TooManyAttempts("too many failed logins; try again later", retry_after=s.login.window_seconds)
    user = session.scalars(select(User).where(User.username == username)).first()
    if user is None or not user.active:
        rt.hasher.verify_dummy(password)
        ok = False
    else:
        ok = rt.hasher.verify(password, user.password_hash)
    if not ok:
        # The failure count must outlive this request's rollback, like the refusal event itself.
        trail.keep_on_refusal(lambda s: throttle.record_failure(s, keys))
        trail.record(session, "auth.login", audit.UNAUTHENTICATED, resource_type="User",
                     resource_id=user.id if user else None, detail={"reason": "bad credentials", "account_key": account_key[:16]})
        raise Unauthenticated("incorrect username or password")
    if rt.hasher.needs_rehash(user.password_hash):
        user.password_hash = rt.hasher.hash(password)
    throttle.record_success(session, keys)
    principal = principal_of(user)
    trail.context = AccessContext(principal, trail.context.purpose, trail.context.request_id, trail.context.client_address)
    trail.record(session, "auth.login", audit.SUCCESS, resource_type="User", resource_id=user.id)
    return user


def principal_from_claims(claims: dict) -> Principal:
    return Principal.build(uuid.UUID(claims["sub"]), claims["name"], claims["role"],
                           Scope(claims["scope_level"], claims["scope_code"], claims.get("prov"), claims.get("dist")))


def logout(session: Session, trail: AuditTrail, user_id: uuid.UUID) -> None:
    """`POST /api/v1/auth/logout`: the account's token generation moves on, so this token and every
    other token of the account stop working on every worker (registry/users/revocation.py says why
    a generation rather than one token's id). Console sessions are separate and stay."""
    user = session.get(User, user_id)
    if user is None:
        trail.record(session, "auth.logout", audit.NOT_FOUND, resource_type="User", resource_id=user_id)
        raise Unauthenticated("the token is invalid or expired")
    generation = revocation.bump(session, user)
    trail.record(session, "auth.logout", audit.SUCCESS, resource_type="User", resource_id=user.id,
                 detail={"token_generation": generation})
