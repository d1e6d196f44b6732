"""Revocable staff tokens (issue 16 item 5, registry/users/revocation.py).

The cross-worker claim is tested on two real uvicorn processes over the suite's database, each
with its own cache: a token revoked through one is refused by the other for every request sent
more than a second after the revocation answered (the cache holds a copy for at most
NHR_TOKEN_REVOCATION_CHECK_SECONDS, 0.5 s by default)."""

from __future__ import annotations

import time
import uuid

import httpx
import pytest

from conftest import PASSWORD, audit_events
from live_server import serving
from registry.users.revocation import STALE
from security import tokens

BOUND = 1.0  # seconds: the claim


@pytest.fixture(scope="module")
def two_workers(runtime, tmp_path_factory):
    logs = tmp_path_factory.mktemp("workers")
    with serving(runtime, logs / "a.log") as a, serving(runtime, logs / "b.log") as b:
        with httpx.Client(base_url=a, timeout=30) as ca, httpx.Client(base_url=b, timeout=30) as cb:
            yield ca, cb


def _login(c: httpx.Client, username: str, password: str = PASSWORD) -> dict:
    r = c.post("/api/v1/auth/token", data={"username": username, "password": password})
    assert r.status_code == 200, r.status_code
    return {"Authorization": f"Bearer {r.json()['access_token']}"}


def _refused_within(c: httpx.Client, headers: dict, revoked_at: float) -> float:
    """Poll until 401; every request sent later than BOUND after the revocation must be refused.
    Returns when (after the revocation) the first refused request was sent."""
    while True:
        sent = time.monotonic() - revoked_at
        r = c.get("/api/v1/me", headers=headers)
        if r.status_code == 401:
            assert r.headers["content-type"].startswith("application/problem+json")
            return sent
        assert r.status_code == 200, r.status_code
        assert sent <= BOUND, f"a revoked token was still accepted {sent:.2f} s after the revocation"
        time.sleep(0.02)


@pytest.mark.parametrize("how", ["logout", "deactivate", "password-reset", "sessions/end"])
def test_a_token_revoked_through_one_worker_is_refused_by_another_within_a_second(two_workers, world, how):
    a, b = two_workers
    victim = world.users["clinic_a"]
    h = _login(a, victim)
    assert b.get("/api/v1/me", headers=h).status_code == 200  # worker b now holds the generation in its cache
    if how == "logout":
        r = a.post("/api/v1/auth/logout", headers=h)
        assert r.status_code == 204
    else:
        admin = _login(a, world.users["admin"])
        user_id = b.get("/api/v1/me", headers=h).json()["user_id"]
        r = a.post(f"/api/v1/users/{user_id}/{how}", headers=admin)
        assert r.status_code == 200, r.status_code
    revoked_at = time.monotonic()
    assert _refused_within(b, h, revoked_at) <= BOUND
    assert _refused_within(a, h, revoked_at) <= BOUND


def test_logout_ends_every_token_of_the_account_and_a_new_login_works(client, runtime, world):
    first, second = world.h("clinic_b"), None
    r = client.post("/api/v1/auth/token", data={"username": world.users["clinic_b"], "password": PASSWORD})
    second = {"Authorization": f"Bearer {r.json()['access_token']}"}
    rid = uuid.uuid4().hex
    assert client.post("/api/v1/auth/logout", headers={**first, "X-Request-ID": rid}).status_code == 204
    assert [(e.action, e.outcome) for e in audit_events(runtime, request_id=rid)] == [("auth.logout", "success")]
    runtime.token_generations._seen.clear()  # this process's copy: the wait is the cross-worker test's subject
    for h in (first, second):
        assert client.get("/api/v1/me", headers=h).status_code == 401
        assert client.post("/api/v1/auth/logout", headers=h).status_code == 401
    r = client.post("/api/v1/auth/token", data={"username": world.users["clinic_b"], "password": PASSWORD})
    assert client.get("/api/v1/me", headers={"Authorization": f"Bearer {r.json()['access_token']}"}).status_code == 200


def test_a_staff_token_without_its_generation_or_with_an_old_one_is_refused(client, runtime, world):
    h = world.h("official_district")
    me = client.get("/api/v1/me", headers=h).json()
    claims = {"name": me["username"], "role": "health_official", "scope_level": "district", "scope_code": "PK-PB-LAH",
              "prov": "PK-PB", "dist": "PK-PB-LAH"}
    for extra in ({}, {"tgen": -1}, {"tgen": "0"}, {"tgen": True}):
        forged, _ = tokens.issue(runtime.tokens, me["user_id"], {**claims, **extra})
        r = client.get("/api/v1/me", headers={"Authorization": f"Bearer {forged}"})
        assert r.status_code == 401, extra
    good, _ = tokens.issue(runtime.tokens, me["user_id"], {**claims, "tgen": 0})
    assert client.get("/api/v1/me", headers={"Authorization": f"Bearer {good}"}).status_code == 200


def test_a_cached_generation_is_trusted_only_for_the_interval(client, runtime, world):
    """The cache is real: within the interval a request costs no read (what bench/revocation.py measures)."""
    h = world.h("official_province")
    user_id = uuid.UUID(client.get("/api/v1/me", headers=h).json()["user_id"])
    cache = runtime.token_generations
    before = time.monotonic()
    generation = cache.load(user_id)
    assert generation == 0 and cache.cached(user_id, now=before + cache.max_age / 2) == generation
    assert cache.cached(user_id, now=time.monotonic() + cache.max_age) is STALE
