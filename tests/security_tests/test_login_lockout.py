"""A stranger cannot lock an owner out of staff or citizen login (issue 18; security/throttle.py).

Clients are told apart by address: each test client below has its own (TestClient's `client`).
Two claims, for both logins:
1. failures from one client throttle that client for that account, and the owner logging in from
   its own client still gets in;
2. guessing spread over many clients hits the slower per-account ceiling: new clients are then
   refused even with the right secret, while a client the account has logged in from still gets in.
"""

from __future__ import annotations

import secrets

import pytest
from fastapi.testclient import TestClient

from conftest import PASSWORD, audit_events
from registry.citizens import codes


def _client(app, address: str) -> TestClient:
    return TestClient(app, raise_server_exceptions=False, client=(address, 40000))


def _addr() -> str:
    return f"198.51.100.{secrets.randbelow(250) + 1}-{secrets.token_hex(3)}"  # unique per test run


def _staff(world):
    user = world.users["clinic_a"]

    def attempt(client: TestClient, password: str):
        return client.post("/api/v1/auth/token", data={"username": user, "password": password})
    return attempt, PASSWORD, "wrong password, guessed"


def _citizen(world):
    child = world.register("clinic_a")
    wrong = next(c for c in iter(codes.generate, None) if c != child["access_code"])

    def attempt(client: TestClient, code: str):
        return client.post("/api/v1/citizen/token", json={"health_id": child["health_id"], "access_code": code})
    return attempt, child["access_code"], wrong


LOGINS = {"staff": _staff, "citizen": _citizen}


@pytest.mark.parametrize("kind", LOGINS)
def test_a_stranger_elsewhere_does_not_lock_the_owner_out(kind, world, app, runtime):
    attempt, right, wrong = LOGINS[kind](world)
    limit = runtime.settings.login.max_failures_per_pair
    attacker, owner = _client(app, _addr()), _client(app, _addr())
    for i in range(limit):
        assert attempt(attacker, wrong).status_code == 401, f"failure {i + 1}"
    r = attempt(attacker, right)
    assert r.status_code == 429 and int(r.headers["Retry-After"]) == runtime.settings.login.window_seconds
    assert "access_token" not in r.text  # the attacker's client is slowed, even with the right secret
    [ev] = audit_events(runtime, request_id=r.headers["X-Request-ID"])
    assert (ev.outcome, ev.detail["reason"], ev.detail["throttle"]) == ("denied", "throttled", "pair")
    ok = attempt(owner, right)
    assert ok.status_code == 200 and ok.json()["access_token"]  # the owner, from its own client, gets in


@pytest.mark.parametrize("kind", LOGINS)
def test_guessing_over_many_clients_hits_the_account_ceiling_but_not_the_owners_known_client(
        kind, world, app, runtime, monkeypatch):
    attempt, right, wrong = LOGINS[kind](world)
    owner = _client(app, _addr())
    assert attempt(owner, right).status_code == 200  # the owner's device is known to the account from now on
    login = runtime.settings.login
    monkeypatch.setattr(login, "max_failures_per_account", 2 * login.max_failures_per_pair)
    for _ in range(2):  # two clients, each up to its pair limit: the account's ceiling is reached
        attacker = _client(app, _addr())
        for _ in range(login.max_failures_per_pair):
            assert attempt(attacker, wrong).status_code == 401
    fresh = attempt(_client(app, _addr()), right)
    assert fresh.status_code == 429, "a new client got past the account's ceiling"
    [ev] = audit_events(runtime, request_id=fresh.headers["X-Request-ID"])
    assert ev.detail["throttle"] == "account"
    ok = attempt(owner, right)
    assert ok.status_code == 200 and ok.json()["access_token"]  # the owner's own client still gets in
