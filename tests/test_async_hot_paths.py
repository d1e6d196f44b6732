"""The hot paths on the event loop (registry/async_database.py, issue 7): reading a patient and
searching by identifier run as coroutines on PostgreSQL's async pool, and answer exactly what the
sync services answer (which SQLite, and a search holding an Idempotency-Key, still use)."""

from __future__ import annotations

import uuid

import pytest
from pydantic import TypeAdapter
from sqlalchemy import select

from conftest import PG_URL, audit_events
from registry.patients import service
from registry.patients.schemas import PatientMatch, PatientView
from security.audit.models import AuditEventSubjectRow

on_pg = pytest.mark.skipif(not PG_URL, reason="the async pool exists on PostgreSQL only")


def _subjects(rt, event_id) -> set:
    t = AuditEventSubjectRow.__table__
    with rt.sessions() as s:
        return set(s.execute(select(t.c.patient_id).where(t.c.event_id == event_id)).scalars())


def _search(world, who, child, *, key: str | None = None):
    rid = f"hot-{uuid.uuid4().hex}"
    extra = {"X-Request-ID": rid} | ({"Idempotency-Key": key} if key else {})
    r = world.client.post("/api/v1/patients/search", json={"system": "bform", "value": child["_input"]["bform"]},
                          headers=world.h(who, **extra))
    return r, rid


@on_pg
def test_read_and_search_never_touch_the_sync_services(world, monkeypatch):
    """On PostgreSQL the hot paths stay on the loop: the sync services are not called at all."""
    child = world.register("clinic_a")

    def sync_called(*_a, **_k):
        raise AssertionError("the sync service ran on PostgreSQL")

    monkeypatch.setattr(service, "read", sync_called)
    monkeypatch.setattr(service, "search", sync_called)
    assert world.client.get(f"/api/v1/patients/{child['id']}", headers=world.h("clinic_a")).status_code == 200
    r, _ = _search(world, "clinic_a", child)
    assert r.status_code == 200 and r.json()[0]["id"] == child["id"]


@pytest.mark.parametrize("who", ["clinic_a", "clinic_c"])  # capture scope; another province (search scope only)
def test_async_search_answers_and_audits_as_the_sync_search(world, runtime, who):
    """Same body and same audit event (outcome, scope flags, detail, subjects) through the loop's
    pool and through the sync service (an Idempotency-Key keeps a search on the sync path)."""
    child = world.register("clinic_a")
    fast, fast_rid = _search(world, who, child)
    slow, slow_rid = _search(world, who, child, key=f"k-{uuid.uuid4().hex}")
    assert fast.status_code == slow.status_code == 200
    assert fast.json() == slow.json()
    TypeAdapter(list[PatientMatch]).validate_python(fast.json())
    (a,), (b,) = audit_events(runtime, request_id=fast_rid), audit_events(runtime, request_id=slow_rid)
    same = ("action", "outcome", "patient_id", "patient_province", "patient_district", "outside_capture_scope",
            "detail", "actor_username", "resource_type")
    assert {k: getattr(a, k) for k in same} == {k: getattr(b, k) for k in same}
    assert _subjects(runtime, a.id) == _subjects(runtime, b.id) == {uuid.UUID(child["id"])}


def test_read_response_is_the_declared_model(world):
    child = world.register("clinic_a")
    r = world.client.get(f"/api/v1/patients/{child['id']}", headers=world.h("clinic_a"))
    assert r.status_code == 200 and r.headers["content-type"] == "application/json"
    view = PatientView.model_validate(r.json())
    assert str(view.id) == child["id"] and r.headers["ETag"] == f'"{view.version}"'


def test_search_without_matches_is_audited_once_with_no_subjects(world, runtime):
    rid = f"hot-{uuid.uuid4().hex}"
    r = world.client.post("/api/v1/patients/search", json={"system": "bform", "value": "35202-0000000-1"},
                          headers=world.h("clinic_a", **{"X-Request-ID": rid}))
    assert r.status_code == 200 and r.json() == []
    (event,) = audit_events(runtime, request_id=rid)
    assert (event.action, event.outcome, event.detail["matches"]) == ("patient.search", "success", 0)
    assert _subjects(runtime, event.id) == set()
