"""Administrators' actions on staff accounts through the API (registry/users/actions.py):
scope (404 outside the jurisdiction), 409 when already in that state, one audit event each, and
what each action does to logins, tokens and console sessions."""

from __future__ import annotations

import uuid

import pytest
from sqlalchemy import select

from conftest import PASSWORD, audit_events
from console_helpers import signed_in
from registry.users.models import User
from registry.users.schemas import UserCreate
from registry.users.service import create_user

PROBLEM = "application/problem+json"


def _id(runtime, username: str) -> str:
    with runtime.sessions() as s:
        return str(s.scalars(select(User.id).where(User.username == username)).one())


def _act(client, world, who: str, target: str, action: str, *, as_: str = "admin"):
    rid = uuid.uuid4().hex
    r = client.post(f"/api/v1/users/{_id(world.runtime, world.users[target]) if target in world.users else target}/{action}",
                    headers=world.h(as_, **{"X-Request-ID": rid}))
    return r, [(e.action, e.outcome) for e in audit_events(world.runtime, request_id=rid)]


def _login(client, username: str, password: str = PASSWORD) -> int:
    return client.post("/api/v1/auth/token", data={"username": username, "password": password}).status_code


def _refused(client, runtime, headers) -> bool:
    runtime.token_generations._seen.clear()  # this process's copy (the wait is test_token_revocation's subject)
    return client.get("/api/v1/me", headers=headers).status_code == 401


def test_deactivate_and_reactivate(client, runtime, world):
    h = world.h("clinic_a")
    r, events = _act(client, world, "admin", "clinic_a", "deactivate")
    assert r.status_code == 200 and r.json()["active"] is False and events == [("user.deactivate", "success")]
    assert _refused(client, runtime, h) and _login(client, world.users["clinic_a"]) == 401
    r, events = _act(client, world, "admin", "clinic_a", "deactivate")
    assert r.status_code == 409 and r.headers["content-type"].startswith(PROBLEM) and r.json()["status"] == 409
    assert events == [("user.deactivate", "conflict")]
    r, events = _act(client, world, "admin", "clinic_a", "reactivate")
    assert r.status_code == 200 and r.json()["active"] is True and events == [("user.reactivate", "success")]
    assert _refused(client, runtime, h)  # reactivation revives no old token
    assert _login(client, world.users["clinic_a"]) == 200
    r, events = _act(client, world, "admin", "clinic_a", "reactivate")
    assert r.status_code == 409 and events == [("user.reactivate", "conflict")]


def test_unlock_clears_failed_logins(client, runtime, world):
    username = world.users["clinic_b"]
    r, events = _act(client, world, "admin", "clinic_b", "unlock")
    assert r.status_code == 409 and events == [("user.unlock", "conflict")]  # nothing to clear
    per_pair = runtime.settings.login.max_failures_per_pair
    for _ in range(per_pair):
        assert _login(client, username, "not-the-password-at-all") == 401
    assert _login(client, username) == 429  # throttled: even the right password is refused
    r, events = _act(client, world, "admin", "clinic_b", "unlock")
    assert r.status_code == 200 and events == [("user.unlock", "success")]
    assert _login(client, username) == 200
    for _ in range(per_pair):  # failures after the unlock count again
        assert _login(client, username, "not-the-password-at-all") == 401
    assert _login(client, username) == 429


def test_password_reset_shows_the_new_password_once(client, runtime, world):
    h = world.h("clinic_a2")
    r, events = _act(client, world, "admin", "clinic_a2", "password-reset")
    assert r.status_code == 200 and events == [("user.password_reset", "success")]
    assert r.headers["cache-control"] == "no-store"
    password = r.json()["password"]
    assert len(password) >= max(20, runtime.settings.passwords.min_length)
    assert _refused(client, runtime, h)
    assert _login(client, world.users["clinic_a2"]) == 401 and _login(client, world.users["clinic_a2"], password) == 200
    (event,) = audit_events(runtime, request_id=r.headers["x-request-id"])
    assert password not in str(tuple(event))  # the password is nowhere in the audit event
    r2, _ = _act(client, world, "admin", "clinic_a2", "password-reset")
    assert r2.json()["password"] != password


def test_end_sessions_ends_tokens_and_console_sessions(app, client, runtime, world):
    h = world.h("official_district")
    console, _ = signed_in(app, world.users["official_district"])
    r, events = _act(client, world, "admin", "official_district", "sessions/end")
    assert r.status_code == 200 and r.json()["active"] is True and events == [("user.sessions_end", "success")]
    assert _refused(client, runtime, h)
    assert console.get("/console").status_code == 303  # back to the login form
    assert _login(client, world.users["official_district"]) == 200


def test_a_provincial_administrator_reaches_only_its_province(client, runtime, world):
    username = f"admin.sd.{world.tag}"
    with runtime.sessions.begin() as s:
        create_user(s, runtime, UserCreate(username=username, display_name="admin sd", password=PASSWORD, role="admin",
                                           scope_code="PK-SD"))
    world.users["admin_sd"] = username
    for action in ("deactivate", "reactivate", "unlock", "password-reset", "sessions/end"):
        r, events = _act(client, world, "admin_sd", "clinic_a", action, as_="admin_sd")  # a Punjab account
        assert r.status_code == 404 and r.headers["content-type"].startswith(PROBLEM), action
        assert events == [(f"user.{action.replace('-', '_').replace('/', '_')}", "not_found")]
        r, _ = _act(client, world, "admin_sd", str(uuid.uuid4()), action, as_="admin_sd")
        assert r.status_code == 404, action
    assert _login(client, world.users["clinic_a"]) == 200  # untouched
    r, events = _act(client, world, "admin_sd", "clinic_c", "sessions/end", as_="admin_sd")  # a Sindh account
    assert r.status_code == 200


@pytest.mark.parametrize("who", ["clinic_a", "auditor", "official_national", "steward_province"])
def test_only_administrators_act_on_accounts(client, world, who):
    r, events = _act(client, world, who, "clinic_b", "deactivate", as_=who)
    assert r.status_code == 403 and events == [("user.deactivate", "denied")]


def test_an_administrator_cannot_deactivate_itself(client, world):
    r, events = _act(client, world, "admin", "admin", "deactivate")
    assert r.status_code == 422 and r.json()["errors"][0]["field"] == "user_id" and events == [("user.deactivate", "invalid")]


def test_unlock_lifts_the_account_wide_ceiling_too(runtime, world):
    """Guessing spread over many clients locks the account for unknown clients; unlock lifts it,
    and failures after the unlock count again (security/throttle.py)."""
    from security import throttle

    username, limits = world.users["auditor_province"], throttle.Limits.of(runtime.settings.login)
    stranger = throttle.Keys.of("", username, "198.51.100.7")
    with runtime.sessions.begin() as s:
        for i in range(limits.per_account):
            throttle.record_failure(s, throttle.Keys.of("", username, f"203.0.113.{i % 250}"))
        assert throttle.refused(s, stranger, limits) == "account"
    r, events = _act(world.client, world, "admin", "auditor_province", "unlock")
    assert r.status_code == 200 and events == [("user.unlock", "success")]
    with runtime.sessions.begin() as s:
        assert throttle.refused(s, stranger, limits) is None
        for i in range(limits.per_account):
            throttle.record_failure(s, throttle.Keys.of("", username, f"192.0.2.{i % 250}"))
        assert throttle.refused(s, stranger, limits) == "account"
