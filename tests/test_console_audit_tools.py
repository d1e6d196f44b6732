"""The auditor's console tools (issue 14): export of the event search, anomaly flags and the audit
log's verification status, each through the API's own service, gate and audit event; and the
matching API `GET /api/v1/audit/verification`, which must say so when the log was tampered with."""

from __future__ import annotations

import json
import uuid

import pytest
from sqlalchemy import select, text

from conftest import audit_events, drop_database, fresh_database_url, make_settings
from console_helpers import signed_in
from registry import bootstrap
from registry.audit_log import log_status, sealing
from registry.context import ServiceContext
from registry.runtime import Runtime
from security.access.principal import AccessContext
from security.audit.sealer import LEAVES
from security.audit.trail import SUCCESS, AuditTrail, PatientRef

MARKER = "Qq-console-tamper-7731"


def _events(runtime, rid):
    return [(e.action, e.outcome) for e in audit_events(runtime, request_id=rid)]


@pytest.fixture(scope="module")
def child(shared_world):
    return shared_world.register("clinic_a")


def test_auditor_exports_the_searched_events_through_the_apis_service(app, runtime, shared_world, child):
    w = shared_world
    assert w.client.get(f"/api/v1/patients/{child['id']}", headers=w.h("official_district")).status_code == 200
    c, csrf = signed_in(app, w.users["auditor"])
    page = c.post("/console/audit", data={"csrf": csrf, "patient_id": child["id"], "action": "patient.read"})
    assert page.status_code == 200 and 'action="/console/audit/export"' in page.text
    rid = uuid.uuid4().hex
    r = c.post("/console/audit/export", data={"csrf": csrf, "format": "csv", "patient_id": child["id"], "action": "patient.read"},
               headers={"X-Request-ID": rid})
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/csv")
    assert r.headers["content-disposition"] == 'attachment; filename="audit-events.csv"'
    assert r.headers["cache-control"] == "no-store" and int(r.headers["x-export-count"]) >= 1
    lines = r.text.strip().splitlines()
    assert lines[0].startswith("id,") and all(child["id"] in line for line in lines[1:])
    [ev] = audit_events(runtime, request_id=rid)
    assert (ev.action, ev.outcome) == ("audit.export", "success")
    detail = ev.detail if isinstance(ev.detail, dict) else json.loads(ev.detail)
    assert detail["format"] == "csv" and "patient_id" in detail["filters"] and child["id"] not in json.dumps(detail)
    r = c.post("/console/audit/export", data={"csrf": csrf, "format": "fhir", "patient_id": child["id"]})
    assert r.status_code == 200 and json.loads(r.text.splitlines()[0])["resourceType"] == "AuditEvent"
    rid = uuid.uuid4().hex
    r = c.post("/console/audit/export", data={"format": "csv"}, headers={"X-Request-ID": rid})  # no CSRF token
    assert r.status_code == 403 and _events(runtime, rid) == [("console.csrf", "denied")]
    c2, csrf2 = signed_in(app, w.users["clinic_a"])
    rid = uuid.uuid4().hex
    r = c2.post("/console/audit/export", data={"csrf": csrf2, "format": "csv"}, headers={"X-Request-ID": rid})
    assert r.status_code == 403 and _events(runtime, rid) == [("audit.export", "denied")]


def test_auditor_sees_anomaly_flags_with_their_explanations(app, runtime, shared_world):
    w = shared_world
    for _ in range(6):  # repeated refusals: the clinic probes for records that are not there
        assert w.client.get(f"/api/v1/patients/{uuid.uuid4()}", headers=w.h("clinic_a")).status_code == 404
    c, csrf = signed_in(app, w.users["auditor"])
    rid = uuid.uuid4().hex
    r = c.get("/console/audit/anomalies", headers={"X-Request-ID": rid})
    assert r.status_code == 200 and r.headers["cache-control"] == "no-store"
    assert "Repeated refused requests" in r.text and w.users["clinic_a"] in r.text
    assert "Repeated refusals can mean probing for records" in r.text  # the service's own explanation
    assert _events(runtime, rid) == [("audit.anomalies", "success")]
    c.get("/console/language/ur")  # in Urdu: the flag in Urdu with its numbers, the service's text as details
    ur = c.get("/console/audit/anomalies")
    c.get("/console/language/en")
    assert 'dir="rtl"' in ur.text and "درخواستیں مسترد ہوئیں" in ur.text and "%(n)s" not in ur.text
    assert 'lang="en" dir="ltr">' in ur.text and "Repeated refusals can mean probing" in ur.text  # the details, marked English
    api = w.client.get("/api/v1/audit/anomalies", headers=w.h("auditor", **{"X-Purpose-Of-Use": "HCOMPL"})).json()
    assert any(f["actor_username"] == w.users["clinic_a"] and f["kind"] == "repeated_refusals" for f in api["flags"])
    rid = uuid.uuid4().hex
    r = c.post("/console/audit/anomalies", data={"csrf": csrf, "since": "2026-05-02", "until": "2026-01-01"},
               headers={"X-Request-ID": rid})
    assert r.status_code == 422 and "since" in r.text and _events(runtime, rid) == [("audit.anomalies", "invalid")]
    rid = uuid.uuid4().hex  # a form without the session's CSRF token is refused before the service runs
    r = c.post("/console/audit/anomalies", data={"csrf": "forged-token-000000000000", "since": "2026-01-01"},
               headers={"X-Request-ID": rid})
    assert r.status_code == 403 and _events(runtime, rid) == [("console.csrf", "denied")]
    c2, _ = signed_in(app, w.users["official_province"])
    rid = uuid.uuid4().hex
    assert c2.get("/console/audit/anomalies", headers={"X-Request-ID": rid}).status_code == 403
    assert _events(runtime, rid) == [("audit.anomalies", "denied")]


def test_auditor_sees_the_log_verify_with_its_latest_checkpoint(app, runtime, shared_world):
    w = shared_world
    sealing.seal_all(runtime)
    c, _ = signed_in(app, w.users["auditor_province"])
    rid = uuid.uuid4().hex
    r = c.get("/console/audit/log", headers={"X-Request-ID": rid})
    assert r.status_code == 200 and "The audit log verifies" in r.text and r.headers["cache-control"] == "no-store"
    assert _events(runtime, rid) == [("audit.verification", "success")]
    api = w.client.get("/api/v1/audit/verification", headers=w.h("auditor", **{"X-Purpose-Of-Use": "HCOMPL"}))
    assert api.status_code == 200, api.json()
    body = api.json()
    latest = w.client.get("/api/v1/audit/checkpoints/latest", headers=w.h("auditor", **{"X-Purpose-Of-Use": "HCOMPL"})).json()
    assert body["intact"] is True and body["problem"] is None
    assert body["checkpoint"]["tree_size"] >= latest["tree_size"] - 10 and body["checkpoint"]["key_id"] == latest["key_id"]
    assert body["checkpoint"]["key_id"] in r.text
    rid = uuid.uuid4().hex
    r = w.client.get("/api/v1/audit/verification", headers={**w.h("clinic_a"), "X-Request-ID": rid})
    assert r.status_code == 403 and _events(runtime, rid) == [("audit.verification", "denied")]
    c2, _ = signed_in(app, w.users["admin"])
    assert c2.get("/console/audit/log").status_code == 403


@pytest.fixture
def sealed_log(tmp_path):
    url = fresh_database_url(tmp_path, "logstatus")
    rt = Runtime.build(make_settings(url, tmp_path / "keyring"))
    bootstrap.upgrade(url)
    trail = AuditTrail(AccessContext(None, "TREAT", "req-log-status", "10.0.0.9"))
    with rt.sessions.begin() as s:
        for _ in range(3):
            trail.record(s, "patient.read", SUCCESS, resource_id=uuid.uuid4(),
                         patient=PatientRef(uuid.uuid4(), "PK-PB", "PK-PB-LAH"), detail={"n": 1})
    sealing.seal_all(rt)
    yield rt
    rt.engine.dispose()
    drop_database(url)


def _status(rt) -> log_status.LogStatus:
    with rt.sessions.begin() as s:
        ctx = ServiceContext(s, rt, AuditTrail(AccessContext(None, "HCOMPL", "req-status", "10.0.0.9")))
        return log_status.status(ctx)


def test_verification_status_says_when_a_sealed_event_was_altered(sealed_log):
    rt = sealed_log
    ok = _status(rt)
    assert ok.intact and ok.checkpoint is not None and ok.checkpoint.tree_size == 3 and ok.problem is None
    with rt.sessions() as s:
        event_id = s.execute(select(LEAVES.c.event_id).where(LEAVES.c.position == 1)).scalar_one()
    pg = rt.engine.dialect.name == "postgresql"
    with rt.engine.begin() as conn:  # an operator with database access rewrites an event
        if pg:
            conn.execute(text("ALTER TABLE audit_events DISABLE TRIGGER USER"))
        else:
            conn.execute(text("DROP TRIGGER IF EXISTS nhr_audit_events_no_update"))
        conn.execute(text("UPDATE audit_events SET client_address = :m WHERE id = :id"),
                     {"m": MARKER, "id": event_id if pg else event_id.hex})
    bad = _status(rt)
    assert bad.intact is False and bad.checkpoint is not None and bad.checkpoint.tree_size == 3
    assert "position 1" in bad.problem and MARKER not in bad.problem
