"""The console's account actions (api/console/staff_routes.py): chosen on the list, confirmed on a
page of their own (POST + CSRF, nothing changes there), done through the same services and audit
events as the API; the reset password is shown once on a no-store page."""

from __future__ import annotations

import uuid

from sqlalchemy import select

from conftest import PASSWORD, audit_events
from console_helpers import browser, log_in, signed_in
from registry.users.models import User
from registry.users.schemas import UserCreate
from registry.users.service import create_user


def _events(runtime, rid):
    return [(e.action, e.outcome) for e in audit_events(runtime, request_id=rid)]


def _id(runtime, username: str) -> str:
    with runtime.sessions() as s:
        return str(s.scalars(select(User.id).where(User.username == username)).one())


def _post(c, path, data, rid=None):
    rid = rid or uuid.uuid4().hex
    return c.post(path, data=data, headers={"X-Request-ID": rid}), rid


def test_each_action_is_confirmed_before_it_is_done(app, runtime, world):
    c, csrf = signed_in(app, world.users["admin"])
    target = _id(runtime, world.users["clinic_a"])
    page = c.get("/console/staff").text
    for action in ("deactivate", "password-reset", "sessions/end", "unlock"):
        assert f'value="{action}"' in page
    for action in ("deactivate", "reactivate", "unlock", "password-reset", "sessions/end"):
        r, rid = _post(c, "/console/staff/confirm", {"csrf": csrf, "user_id": target, "action": action})
        assert r.status_code == 200 and f'action="/console/staff/{action}"' in r.text, action
        assert world.users["clinic_a"] in r.text and _events(runtime, rid) == []  # a question, not an action
    assert log_in(browser(app), world.users["clinic_a"]).status_code == 303  # nothing changed
    r, _ = _post(c, "/console/staff/confirm", {"csrf": csrf, "user_id": target, "action": "delete"})
    assert r.status_code == 422
    r, rid = _post(c, "/console/staff/confirm", {"user_id": target, "action": "deactivate"})  # no CSRF token
    assert r.status_code == 403 and _events(runtime, rid) == [("console.csrf", "denied")]


def test_password_reset_in_the_console_shows_the_password_once(app, runtime, world):
    c, csrf = signed_in(app, world.users["admin"])
    victim, _ = signed_in(app, world.users["clinic_b"])
    r, rid = _post(c, "/console/staff/password-reset", {"csrf": csrf, "user_id": _id(runtime, world.users["clinic_b"])})
    assert r.status_code == 200 and r.headers["cache-control"] == "no-store"
    assert _events(runtime, rid) == [("user.password_reset", "success")]
    password = r.text.split('<code class="once">', 1)[1].split("</code>", 1)[0]
    assert len(password) >= 20 and password not in c.get("/console/staff").text
    assert victim.get("/console").status_code == 303  # the owner's session ended
    assert log_in(browser(app), world.users["clinic_b"]).status_code == 401
    assert log_in(browser(app), world.users["clinic_b"], password).status_code == 303


def test_deactivate_reactivate_unlock_and_end_sessions_in_the_console(app, runtime, world):
    c, csrf = signed_in(app, world.users["admin"])
    target = _id(runtime, world.users["official_district"])
    owner, _ = signed_in(app, world.users["official_district"])
    r, rid = _post(c, "/console/staff/sessions/end", {"csrf": csrf, "user_id": target})
    assert r.status_code == 303 and _events(runtime, rid) == [("user.sessions_end", "success")]
    assert owner.get("/console").status_code == 303
    r, rid = _post(c, "/console/staff/reactivate", {"csrf": csrf, "user_id": target})
    assert r.status_code == 409 and _events(runtime, rid) == [("user.reactivate", "conflict")]
    assert "already active" in r.text
    r, rid = _post(c, "/console/staff/deactivate", {"csrf": csrf, "user_id": target})
    assert r.status_code == 303 and _events(runtime, rid) == [("user.deactivate", "success")]
    assert 'value="reactivate"' in c.get("/console/staff").text
    r, rid = _post(c, "/console/staff/reactivate", {"csrf": csrf, "user_id": target})
    assert r.status_code == 303 and _events(runtime, rid) == [("user.reactivate", "success")]
    for _ in range(runtime.settings.login.max_failures_per_pair):
        log_in(browser(app), world.users["official_district"], "not-the-password-at-all")
    assert log_in(browser(app), world.users["official_district"]).status_code == 429
    r, rid = _post(c, "/console/staff/unlock", {"csrf": csrf, "user_id": target})
    assert r.status_code == 303 and _events(runtime, rid) == [("user.unlock", "success")]
    assert log_in(browser(app), world.users["official_district"]).status_code == 303


def test_outside_the_jurisdiction_is_not_found_in_the_console_too(app, runtime, world):
    username = f"admin.sd.c.{world.tag}"
    with runtime.sessions.begin() as s:
        create_user(s, runtime, UserCreate(username=username, display_name="admin sd", password=PASSWORD, role="admin",
                                           scope_code="PK-SD"))
    c, csrf = signed_in(app, username)
    target = _id(runtime, world.users["clinic_a"])  # Punjab
    assert world.users["clinic_a"] not in c.get("/console/staff").text
    r, _ = _post(c, "/console/staff/confirm", {"csrf": csrf, "user_id": target, "action": "deactivate"})
    assert r.status_code == 404
    r, rid = _post(c, "/console/staff/deactivate", {"csrf": csrf, "user_id": target})
    assert r.status_code == 404 and _events(runtime, rid) == [("user.deactivate", "not_found")]


def test_the_confirmation_page_speaks_urdu(app, runtime, world):
    c, csrf = signed_in(app, world.users["admin"])
    c.cookies.set("nhr_lang", "ur")
    r, _ = _post(c, "/console/staff/confirm", {"csrf": csrf, "user_id": _id(runtime, world.users["clinic_c"]),
                                               "action": "password-reset"})
    assert r.status_code == 200 and 'dir="rtl"' in r.text and "کیا اس اکاؤنٹ کا پاس ورڈ دوبارہ بنایا جائے؟" in r.text
