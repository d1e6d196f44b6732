"""Console sessions (issue 14): the API's login service, a server-side session in a hardened
cookie, CSRF on every POST (refusals audited), idle timeout, absolute lifetime, logout that ends
the session server-side."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

from sqlalchemy import update

from conftest import audit_events
from console_helpers import browser, csrf_of, log_in, signed_in
from registry.console_sessions.models import ConsoleSession
from registry.console_sessions.service import session_id
from registry.users.models import User

COOKIE = "__Host-nhr_session"  # env=test is "outside development": Secure, so __Host- prefixed


def _session_row_update(rt, token: str, **values) -> None:
    with rt.sessions.begin() as s:
        s.execute(update(ConsoleSession).where(ConsoleSession.id == session_id(token)).values(**values))


def test_login_sets_a_hardened_session_cookie_and_is_audited_like_the_api(app, runtime, world):
    c, rid = browser(app), uuid.uuid4().hex
    r = log_in(c, world.users["official_district"], **{"X-Request-ID": rid})
    assert r.status_code == 303 and r.headers["location"] == "/console"
    cookie = next(h for h in r.headers.get_list("set-cookie") if h.startswith(COOKIE + "="))
    flags = {f.strip().lower() for f in cookie.split(";")[1:]}
    assert {"httponly", "secure", "samesite=strict", "path=/"} <= flags
    assert not any(f.startswith("domain=") for f in flags)
    [ev] = audit_events(runtime, request_id=rid)
    assert (ev.action, ev.outcome, ev.actor_username) == ("auth.login", "success", world.users["official_district"])
    # the table holds the token's hash, never the token
    token = c.cookies.get(COOKIE)
    with runtime.sessions() as s:
        assert s.get(ConsoleSession, session_id(token)) is not None and s.get(ConsoleSession, token) is None
    assert c.get("/console").status_code == 200


def test_wrong_password_is_refused_and_audited(app, runtime, world):
    c, rid = browser(app), uuid.uuid4().hex
    r = log_in(c, world.users["official_district"], "not-the-password-at-all", **{"X-Request-ID": rid})
    assert r.status_code == 401 and "incorrect username or password" in r.text
    assert "not-the-password-at-all" not in r.text
    assert COOKIE not in c.cookies
    [ev] = audit_events(runtime, request_id=rid)
    assert (ev.action, ev.outcome) == ("auth.login", "unauthenticated")


def test_console_and_api_share_one_login_throttle(app, client, runtime, world):
    user = world.users["clinic_b"]
    limit = runtime.settings.login.max_failures_per_pair  # the same client (address) as the API calls below
    for _ in range(limit):
        assert client.post("/api/v1/auth/token", data={"username": user, "password": "wrong-wrong-wrong"}).status_code == 401
    r = log_in(browser(app), user)  # the right password, but the account is throttled
    assert r.status_code == 429 and "Retry-After" in r.headers


def test_post_without_or_with_a_wrong_csrf_token_is_refused_and_audited(app, runtime, world):
    c = browser(app)
    c.get("/console/login")
    for data in ({}, {"csrf": "forged-forged-forged-forged"}):
        rid = uuid.uuid4().hex
        r = c.post("/console/login", data={"username": world.users["admin"], "password": "x", **data}, headers={"X-Request-ID": rid})
        assert r.status_code == 403 and COOKIE not in c.cookies
        [ev] = audit_events(runtime, request_id=rid)
        assert (ev.action, ev.outcome) == ("console.csrf", "denied")
    # with a session: the session's own token is required, another session's is refused
    c1, csrf1 = signed_in(app, world.users["official_district"])
    _, csrf2 = signed_in(app, world.users["official_province"])
    rid = uuid.uuid4().hex
    r = c1.post("/console/children/find", data={"system": "nhr", "value": "X", "csrf": csrf2}, headers={"X-Request-ID": rid})
    assert r.status_code == 403
    [ev] = audit_events(runtime, request_id=rid)
    assert (ev.action, ev.outcome, ev.actor_username) == ("console.csrf", "denied", world.users["official_district"])
    r = c1.post("/console/logout", data={})
    assert r.status_code == 403 and c1.get("/console").status_code == 200  # a forged logout does nothing


def test_a_stolen_cookie_stops_working_after_logout(app, runtime, world):
    c, csrf = signed_in(app, world.users["official_district"])
    thief, stolen = browser(app), {"Cookie": f"{COOKIE}={c.cookies.get(COOKIE)}"}
    assert thief.get("/console", headers=stolen).status_code == 200
    rid = uuid.uuid4().hex
    r = c.post("/console/logout", data={"csrf": csrf}, headers={"X-Request-ID": rid})
    assert r.status_code == 303 and r.headers["location"] == "/console/login"
    [ev] = audit_events(runtime, request_id=rid)
    assert (ev.action, ev.outcome) == ("auth.logout", "success")
    for r in (thief.get("/console", headers=stolen), c.get("/console")):
        assert r.status_code == 303 and r.headers["location"] == "/console/login"


def test_idle_timeout_and_absolute_lifetime_end_a_session(app, runtime, world):
    idle = runtime.settings.console.idle_minutes
    c, _ = signed_in(app, world.users["official_district"])
    _session_row_update(runtime, c.cookies.get(COOKIE), last_seen_at=datetime.now(UTC) - timedelta(minutes=idle, seconds=5))
    assert c.get("/console").status_code == 303
    c, _ = signed_in(app, world.users["official_district"])
    _session_row_update(runtime, c.cookies.get(COOKIE), last_seen_at=datetime.now(UTC) - timedelta(minutes=idle - 1))
    assert c.get("/console").status_code == 200  # active within the idle window: still in
    _session_row_update(runtime, c.cookies.get(COOKIE), expires_at=datetime.now(UTC) - timedelta(seconds=1))
    assert c.get("/console").status_code == 303  # the absolute lifetime is over, however active


def test_a_deactivated_account_loses_its_sessions_at_once(app, runtime, world):
    c, _ = signed_in(app, world.users["official_other_district"])
    with runtime.sessions.begin() as s:
        s.execute(update(User).where(User.username == world.users["official_other_district"]).values(active=False))
    assert c.get("/console").status_code == 303


def test_unknown_or_malformed_cookies_are_no_session(app):
    c = browser(app)
    for value in ("", "x", "a" * 500, "not-a-session-token-but-long-enough-1234567890"):
        r = c.get("/console", headers={"Cookie": f"{COOKIE}={value}"})
        assert r.status_code == 303 and r.headers["location"] == "/console/login"
    assert csrf_of(c.get("/console/login").text)
