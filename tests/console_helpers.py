"""Helpers for the console tests: a browser-like client (its own cookie jar, HTTPS so that the
`Secure` cookies travel) that reads CSRF tokens from the forms it is shown."""

from __future__ import annotations

import re

from fastapi.testclient import TestClient

from conftest import PASSWORD

CSRF = re.compile(r'name="csrf" value="([^"]+)"')


def browser(app) -> TestClient:
    return TestClient(app, base_url="https://testserver", raise_server_exceptions=False, follow_redirects=False)


def csrf_of(html: str) -> str:
    m = CSRF.search(html)
    assert m, "the page has no CSRF field"
    return m.group(1)


def log_in(c: TestClient, username: str, password: str = PASSWORD, **headers):
    token = csrf_of(c.get("/console/login").text)
    return c.post("/console/login", data={"username": username, "password": password, "csrf": token}, headers=headers)


def signed_in(app, username: str) -> tuple[TestClient, str]:
    """A client with a live session, and the session's CSRF token."""
    c = browser(app)
    r = log_in(c, username)
    assert r.status_code == 303 and r.headers["location"] == "/console", r.text
    home = c.get("/console")
    assert home.status_code == 200
    return c, csrf_of(home.text)
