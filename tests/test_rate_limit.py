"""The per-principal rate limit on patient-data routes (issue 18, registry/rate_limit.py): past
the limit a principal gets 429 with Retry-After (problem+json, audited), other principals and
non-patient routes are untouched, and the count is shared by every app instance on the database
(a second worker continues the same window)."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from api.app import create_app
from conftest import audit_events
from registry import rate_limit
from registry.runtime import Runtime

WINDOW = 86_400


@pytest.fixture
def limited(runtime, monkeypatch):
    if rate_limit._window(WINDOW)[1] < 120:  # the day's window is about to roll over: counts would restart
        pytest.skip("too close to the window's end")
    monkeypatch.setattr(runtime.settings.limits, "rate_limit_requests", 3)
    monkeypatch.setattr(runtime.settings.limits, "rate_limit_window_seconds", WINDOW)
    return 3


def test_past_the_limit_a_principal_gets_429_with_retry_after(world, client, runtime, limited):
    child = world.register("clinic_a")  # clinic_a's own count: each principal has its own
    url = f"/api/v1/patients/{child['id']}"
    h = world.h("official_district")
    for i in range(limited):
        assert client.get(url, headers=h).status_code == 200, f"request {i + 1}"
    r = client.get(url, headers=h)
    assert r.status_code == 429 and r.headers["content-type"] == "application/problem+json"
    assert r.json()["type"] == "urn:nhr:problem:too-many-attempts"
    assert 0 < int(r.headers["Retry-After"]) <= WINDOW
    assert child["given_name"] not in r.text
    [ev] = audit_events(runtime, request_id=r.headers["X-Request-ID"])
    assert (ev.action, ev.outcome) == ("patient.read", "denied")
    # Still refused on any patient-data route, and counting: the window stays full.
    assert client.get(f"{url}/immunizations", headers=h).status_code == 429
    # Routes that read no patient data are not limited; other principals are not affected.
    assert client.get("/api/v1/jurisdictions", headers=h).status_code == 200
    assert client.get(url, headers=world.h("official_province")).status_code == 200


def test_the_count_is_shared_by_every_worker(world, client, runtime, limited):
    child = world.register("clinic_a")
    url = f"/api/v1/patients/{child['id']}"
    h = world.h("official_district")
    for _ in range(limited - 1):
        assert client.get(url, headers=h).status_code == 200
    other = Runtime.build(runtime.settings)  # another worker: its own engine, pools and memory
    try:
        with TestClient(create_app(runtime.settings, other), raise_server_exceptions=False) as second:
            assert second.get(url, headers=h).status_code == 200  # the last one in the window
            assert second.get(url, headers=h).status_code == 429
        assert client.get(url, headers=h).status_code == 429
    finally:
        other.engine.dispose()
