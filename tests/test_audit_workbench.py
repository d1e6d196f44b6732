"""The auditor's workbench (issue 3): search filters, exports (NDJSON, CSV, FHIR AuditEvent per
IHE BALP), the break-glass review queue, anomaly flags; each request is exactly one audit event,
scoped to the auditor's jurisdiction, and shows identifiers, never patient names or clinical data.

Anomaly tests insert constructed audit rows in a time window of their own (a random day in
2019-2022, actors with fresh ids), so the flags they expect and the flags they must not see are
decided by those rows alone. Failure messages name fields, never patient values.
"""

from __future__ import annotations

import csv
import io
import json
import random
import uuid
from datetime import UTC, datetime, timedelta

import pytest
from fhir.resources.R4B.auditevent import AuditEvent
from sqlalchemy import insert, select, text

from conftest import audit_events
from registry.audit_log.models import BreakGlassReviewRow
from security.audit.models import AuditEventRow

E = "/api/v1/audit/events"
BG = "/api/v1/audit/break-glass"
AN = "/api/v1/audit/anomalies"
REASON = "child brought in unconscious, no card"


def rid() -> str:
    return uuid.uuid4().hex


def get(w, who, url, **params):
    request_id = rid()
    r = w.client.get(url, params=params, headers=w.h(who, **{"X-Request-ID": request_id}))
    return r, request_id


def one_event(runtime, request_id):
    evs = audit_events(runtime, request_id=request_id)
    assert len(evs) == 1, f"expected exactly one audit event, got {len(evs)}"
    return evs[0]


@pytest.fixture
def scene(world):
    """A patient registered at facility a (Lahore, Punjab), read normally by clinic_a and in an
    emergency by clinic_c (Karachi, outside its capture scope)."""
    p = world.register("clinic_a")
    pid = p["id"]
    assert world.client.get(f"/api/v1/patients/{pid}", headers=world.h("clinic_a")).status_code == 200
    r = world.client.get(f"/api/v1/patients/{pid}", headers=world.h("clinic_c", **{"X-Break-Glass-Reason": REASON}))
    assert r.status_code == 200, r.status_code
    bg = [e for e in audit_events(world.runtime, patient_id=uuid.UUID(pid), break_glass=True)]
    assert len(bg) == 1
    return world, p, bg[0]


# --- search ---------------------------------------------------------------------------------


def test_search_filters_by_facility_and_purpose(scene, runtime):
    w, p, _ = scene
    r, request_id = get(w, "auditor", E, facility=w.facilities["a"], patient_id=p["id"])
    assert r.status_code == 200
    items = r.json()["items"]
    assert items and {i["actor_scope_code"] for i in items} == {w.facilities["a"]}
    assert {i["action"] for i in items} >= {"patient.create", "patient.read"}
    ev = one_event(runtime, request_id)
    assert ev.action == "audit.query" and ev.detail["filters"] == ["facility", "patient_id"]
    assert w.facilities["a"] not in json.dumps(ev.detail)

    r, _ = get(w, "auditor", E, patient_id=p["id"], purpose_of_use="ETREAT")
    items = r.json()["items"]
    assert len(items) == 1 and items[0]["break_glass"] and items[0]["actor_scope_code"] == w.facilities["c"]
    r, _ = get(w, "auditor", E, patient_id=p["id"], facility=w.facilities["b"])
    assert r.json()["items"] == []
    r, _ = get(w, "auditor", E, purpose_of_use="not a code")
    assert r.status_code == 422


def test_search_is_scoped_and_paginates(scene):
    w, p, _ = scene
    seen = []
    cursor = None
    while True:
        params = {"patient_id": p["id"], "limit": 1, **({"cursor": cursor} if cursor else {})}
        r, _ = get(w, "auditor_province", E, **params)
        assert r.status_code == 200
        seen += [i["id"] for i in r.json()["items"]]
        cursor = r.json()["next_cursor"]
        if not cursor:
            break
    assert len(seen) == len(set(seen)) >= 3
    r, _ = get(w, "auditor_other_province", E, patient_id=p["id"])
    assert r.status_code == 200 and r.json()["items"] == []


# --- exports --------------------------------------------------------------------------------


def _export(w, who, fmt, **params):
    r, request_id = get(w, who, f"{E}/export", format=fmt, **params)
    assert r.status_code == 200, r.status_code
    return r, request_id


def test_export_ndjson_and_csv_parse_and_are_audited(scene, runtime):
    w, p, bg = scene
    r, request_id = _export(w, "auditor_province", "ndjson", patient_id=p["id"])
    assert r.headers["content-type"].startswith("application/x-ndjson")
    rows = [json.loads(line) for line in r.text.splitlines()]
    assert len(rows) == int(r.headers["X-Export-Count"]) >= 3
    assert r.headers["X-Export-Max-Rows"] == "100000" and r.headers["X-Export-Truncated"] == "false"
    assert [x["occurred_at"] for x in rows] == sorted(x["occurred_at"] for x in rows)
    assert str(bg.id) in {x["id"] for x in rows}
    ev = one_event(runtime, request_id)
    assert (ev.action, ev.outcome, ev.resource_type) == ("audit.export", "success", "AuditEvent")
    assert ev.detail == {"format": "ndjson", "filters": ["patient_id"], "count": len(rows), "truncated": False}

    r, request_id = _export(w, "auditor_province", "csv", patient_id=p["id"])
    table = list(csv.DictReader(io.StringIO(r.text)))
    assert {t["id"] for t in table} == {x["id"] for x in rows}
    emergency = next(t for t in table if t["id"] == str(bg.id))
    assert emergency["break_glass"] == "true" and emergency["purpose_of_use"] == "ETREAT"
    assert json.loads(emergency["detail"]) == bg.detail
    assert one_event(runtime, request_id).detail["format"] == "csv"


def test_export_is_scoped_and_capped(scene, runtime, monkeypatch):
    w, p, _ = scene
    r, _ = _export(w, "auditor_other_province", "ndjson", patient_id=p["id"])
    assert r.text == "" and r.headers["X-Export-Count"] == "0"
    monkeypatch.setattr(runtime.settings.audit, "export_max_rows", 2)
    r, request_id = _export(w, "auditor", "csv", patient_id=p["id"])
    assert len(list(csv.DictReader(io.StringIO(r.text)))) == 2
    assert r.headers["X-Export-Truncated"] == "true" and r.headers["X-Export-Max-Rows"] == "2"
    assert one_event(runtime, request_id).detail["truncated"] is True


def test_export_fhir_auditevents_validate_and_follow_balp(scene, runtime):
    w, p, bg = scene
    s = w.client.post("/api/v1/patients/search", json={"system": "bform", "value": p["_input"]["bform"]},
                      headers=w.h("clinic_a"))
    assert s.status_code in (200, 404), s.status_code
    r, request_id = _export(w, "auditor", "fhir", patient_id=p["id"])
    assert r.headers["content-type"].startswith("application/fhir+ndjson")
    resources = [json.loads(line) for line in r.text.splitlines()]
    assert resources
    for res in resources:
        AuditEvent.model_validate(res)  # raises on an invalid FHIR R4 AuditEvent
    by_id = {res["id"]: res for res in resources}
    emergency = by_id[str(bg.id)]
    assert emergency["action"] == "R" and emergency["outcome"] == "0"
    assert emergency["type"]["code"] == "rest" and emergency["subtype"][0]["code"] == "read"
    assert emergency["meta"]["profile"] == ["https://profiles.ihe.net/ITI/BALP/StructureDefinition/IHE.BasicAudit.PatientRead"]
    assert emergency["meta"]["security"][0]["code"] == "BTG"
    assert emergency["purposeOfEvent"][0]["coding"][0]["code"] == "ETREAT"
    assert {"reference": f"Patient/{p['id']}"} in [e["what"] for e in emergency["entity"]]
    user = emergency["agent"][0]
    assert user["requestor"] and user["who"]["display"] == w.users["clinic_c"]
    assert user["location"]["identifier"]["value"] == w.facilities["c"]
    assert by_id[str(audit_events(runtime, patient_id=uuid.UUID(p["id"]), action="patient.create")[0].id)]["action"] == "C"
    searches = [res for res in resources if any(c["code"] == "patient.search" for c in res["subtype"])]
    for res in searches:
        assert res["action"] == "E"
        query = [e for e in res["entity"] if e["role"]["code"] == "24"]
        assert len(query) == 1 and p["_input"]["bform"] not in json.dumps(res)
    assert one_event(runtime, request_id).detail["format"] == "fhir"


def test_fhir_outcome_codes():
    from registry.audit_log.fhir_audit import outcome_code
    assert [outcome_code(o) for o in ("success", "denied", "not_found", "invalid", "error")] == ["0", "4", "4", "4", "8"]


def test_export_refused_to_other_roles_is_audited(world, runtime):
    for who in ("clinic_a", "official_national", "admin"):
        r, request_id = get(world, who, f"{E}/export", format="csv")
        assert r.status_code == 403
        ev = one_event(runtime, request_id)
        assert (ev.action, ev.outcome) == ("audit.export", "denied")


# --- no names, no clinical data -------------------------------------------------------------


def test_auditors_see_identifiers_never_names_or_clinical_values(scene):
    w, p, _ = scene
    body = p["_input"]
    secret_values = [body["given_name"], body["family_name"], body["bform"], body["guardian"]["name"],
                     body["guardian"]["cnic"], body["phone"], body["address"], body["birth_date"]]
    outputs = [get(w, "auditor", E, patient_id=p["id"])[0].text, get(w, "auditor", BG, status="pending")[0].text]
    outputs += [_export(w, "auditor", fmt, patient_id=p["id"])[0].text for fmt in ("ndjson", "csv", "fhir")]
    for i, out in enumerate(outputs):
        assert p["id"] in out or i == 1, f"output {i} lacks the opaque patient id"
        leaked = [n for n, v in zip(("given", "family", "bform", "guardian", "cnic", "phone", "address", "birth_date"),
                                    secret_values) if v in out]
        assert not leaked, f"output {i} shows {leaked}"
    assert w.users["clinic_c"] in outputs[2], "auditors see the actor's username"


# --- break-glass review queue ---------------------------------------------------------------


def _queue_ids(w, who, status):
    r, _ = get(w, who, BG, status=status, limit=500)
    assert r.status_code == 200
    return {i["event"]["id"]: i for i in r.json()["items"]}


def test_break_glass_queue_lifecycle(scene, runtime):
    w, p, bg = scene
    eid = str(bg.id)
    r, request_id = get(w, "auditor_province", BG, status="pending")
    assert eid in {i["event"]["id"] for i in r.json()["items"]}
    assert one_event(runtime, request_id).action == "audit.review_queue"
    assert eid not in _queue_ids(w, "auditor_other_province", "pending")

    note = "Confirmed with the facility register: emergency admission."
    url = f"{BG}/{eid}/finding"
    request_id = rid()
    r = w.client.post(url, json={"finding": "not_justified", "note": note},
                      headers=w.h("auditor_other_province", **{"X-Request-ID": request_id}))
    assert r.status_code == 404
    assert (one_event(runtime, request_id).action, one_event(runtime, request_id).outcome) == ("audit.finding", "not_found")

    request_id = rid()
    r = w.client.post(url, json={"finding": "justified", "note": note},
                      headers=w.h("auditor_province", **{"X-Request-ID": request_id}))
    assert r.status_code == 201, r.status_code
    assert r.json()["finding"] == "justified" and r.json()["note"] == note
    ev = one_event(runtime, request_id)
    assert (ev.action, ev.outcome, ev.resource_id) == ("audit.finding", "success", eid)
    assert note not in json.dumps(ev.detail)

    request_id = rid()
    r = w.client.post(url, json={"finding": "not_justified"}, headers=w.h("auditor", **{"X-Request-ID": request_id}))
    assert r.status_code == 409
    assert one_event(runtime, request_id).outcome == "conflict"

    assert eid not in _queue_ids(w, "auditor_province", "pending")
    reviewed = _queue_ids(w, "auditor", "reviewed")[eid]["review"]
    assert reviewed["finding"] == "justified" and reviewed["note"] == note and not reviewed["note_unreadable"]
    with runtime.sessions() as s:
        row = s.execute(select(BreakGlassReviewRow.__table__).where(BreakGlassReviewRow.event_id == bg.id)).one()
    assert note.encode() not in row.note_ct and row.note_custodian == "PK-PB" and row.finding == "justified"


def test_finding_needs_a_break_glass_event_and_the_review_permission(scene, runtime):
    w, p, _ = scene
    normal = audit_events(runtime, patient_id=uuid.UUID(p["id"]), action="patient.read", break_glass=False)[0]
    r = w.client.post(f"{BG}/{normal.id}/finding", json={"finding": "justified"}, headers=w.h("auditor"))
    assert r.status_code == 404
    r = w.client.post(f"{BG}/{uuid.uuid4()}/finding", json={"finding": "justified"}, headers=w.h("auditor"))
    assert r.status_code == 404
    r = w.client.post(f"{BG}/{normal.id}/finding", json={"finding": "maybe"}, headers=w.h("auditor"))
    assert r.status_code == 422
    r = w.client.post(f"{BG}/{normal.id}/finding", json={"finding": "justified", "note": "x" * 1001}, headers=w.h("auditor"))
    assert r.status_code == 422
    for who in ("official_national", "clinic_a", "admin"):
        request_id = rid()
        r = w.client.post(f"{BG}/{normal.id}/finding", json={"finding": "justified"},
                          headers=w.h(who, **{"X-Request-ID": request_id}))
        assert r.status_code == 403
        assert (one_event(runtime, request_id).action, one_event(runtime, request_id).outcome) == ("audit.finding", "denied")


def test_reviews_are_append_only(scene, runtime):
    w, _, bg = scene
    r = w.client.post(f"{BG}/{bg.id}/finding", json={"finding": "not_justified"}, headers=w.h("auditor"))
    assert r.status_code == 201
    for stmt in ("UPDATE break_glass_reviews SET finding = 'justified' WHERE event_id = :e",
                 "DELETE FROM break_glass_reviews WHERE event_id = :e"):
        with runtime.engine.connect() as c:
            with pytest.raises(Exception, match="append-only"):
                c.execute(text(stmt), {"e": bg.id if runtime.engine.dialect.name == "postgresql" else bg.id.hex})
            c.rollback()
    with runtime.sessions() as s:
        assert s.execute(select(BreakGlassReviewRow.finding).where(BreakGlassReviewRow.event_id == bg.id)).scalar_one() == "not_justified"


# --- anomaly flags --------------------------------------------------------------------------


class Scenario:
    """Constructed audit rows on one day (local 10:00 unless stated) in an otherwise empty window."""

    def __init__(self, runtime):
        self.runtime = runtime
        self.day = datetime(2019, 1, 1, tzinfo=UTC) + timedelta(days=random.randrange(1400))
        self.rows: list[dict] = []
        self.actors: dict[str, dict] = {}

    def actor(self, name, role="clinic_worker", level="facility", code="F-X"):
        a = {"actor_user_id": uuid.uuid4(), "actor_username": f"{name}.{uuid.uuid4().hex[:6]}", "actor_role": role,
             "actor_scope_level": level, "actor_scope_code": code, "actor_province": "PK-PB", "actor_district": "PK-PB-LAH"}
        self.actors[name] = a
        return a

    def add(self, name, *, local_hour=10, minute=0, n=1, distinct=True, action="patient.read", outcome="success",
            outside=False, break_glass=False):
        pid = uuid.uuid4()
        for i in range(n):
            at = self.day + timedelta(hours=local_hour - 5, minutes=minute, seconds=i)  # Asia/Karachi is UTC+5
            self.rows.append({
                "id": uuid.uuid4(), "occurred_at": at, "request_id": uuid.uuid4().hex, "client_address": "10.0.0.1",
                **self.actors[name], "action": action, "resource_type": "Patient", "resource_id": None,
                "patient_id": uuid.uuid4() if distinct else pid, "patient_province": "PK-PB", "patient_district": "PK-PB-LAH",
                "outcome": outcome, "purpose_of_use": "ETREAT" if break_glass else "TREAT", "break_glass": break_glass,
                "break_glass_reason": REASON if break_glass else None, "outside_capture_scope": outside, "detail": {}})

    def write(self):
        with self.runtime.sessions.begin() as s:
            s.execute(insert(AuditEventRow.__table__), [self.runtime.event_mac.sign(r) for r in self.rows])

    def window(self):
        return {"since": (self.day - timedelta(hours=5)).isoformat(), "until": (self.day + timedelta(hours=19)).isoformat()}


def _flags(w, who, sc, runtime):
    r, request_id = get(w, who, AN, **sc.window())
    assert r.status_code == 200, r.status_code
    ev = one_event(runtime, request_id)
    assert (ev.action, ev.outcome) == ("audit.anomalies", "success")
    mine = {a["actor_username"]: n for n, a in sc.actors.items()}
    out: dict[tuple[str, str], dict] = {}
    for f in r.json()["flags"]:
        if f["actor_username"] in mine:
            assert f["explanation"] and len(f["explanation"]) > 30
            out[(mine[f["actor_username"]], f["kind"])] = f
    return out, r.json()


def test_anomaly_flags_triggered_by_constructed_data(world, runtime):
    sc = Scenario(runtime)
    for name in ("busy", "peer1", "peer2", "night", "roamer", "emergency", "prober", "careful"):
        sc.actor(name)
    sc.add("busy", n=60)
    sc.add("peer1", n=5)
    sc.add("peer2", n=6)
    sc.add("night", local_hour=2, n=3)
    sc.add("roamer", n=2, outside=True, action="patient.search")
    sc.add("emergency", n=2, outside=True, break_glass=True)
    sc.add("prober", n=5, outcome="not_found", minute=10)
    sc.add("careful", n=4, outcome="denied", minute=10)
    sc.write()
    flags, body = _flags(world, "auditor_province", sc, runtime)
    assert set(flags) == {("busy", "many_distinct_patients"), ("night", "outside_working_hours"),
                          ("roamer", "outside_capture_scope"), ("prober", "repeated_refusals")}, sorted(flags)
    busy = flags[("busy", "many_distinct_patients")]
    assert busy["count"] == 60 and busy["threshold"] == 50 and "median" in busy["explanation"]
    assert flags[("night", "outside_working_hours")]["count"] == 3 and "07:00-20:00" in flags[("night", "outside_working_hours")]["explanation"]
    assert flags[("roamer", "outside_capture_scope")]["count"] == 2
    assert flags[("prober", "repeated_refusals")]["count"] == 5 and flags[("prober", "repeated_refusals")]["threshold"] == 5
    assert body["settings"]["timezone"] == "Asia/Karachi"
    other, _ = _flags(world, "auditor_other_province", sc, runtime)
    assert other == {}, "a Sindh auditor must not see Punjab flags"


def test_peer_median_raises_the_threshold(world, runtime, monkeypatch):
    monkeypatch.setattr(runtime.settings.audit, "distinct_patients_min", 2)
    sc = Scenario(runtime)
    for name in ("a", "b", "c", "d"):
        sc.actor(name, role="health_official", level="district", code="PK-PB-LAH")
    sc.add("a", n=20)  # peers' median 6 -> threshold max(2, 3 x 6 = 18): flagged
    sc.add("b", n=6)
    sc.add("c", n=6)
    sc.add("d", n=7)  # peers' median 6 -> 18: not flagged
    sc.add("d", n=4, distinct=False)  # repeated reads of one patient count once
    sc.write()
    flags, _ = _flags(world, "auditor", sc, runtime)
    assert set(flags) == {("a", "many_distinct_patients")}
    assert flags[("a", "many_distinct_patients")]["threshold"] == 18


def test_no_flags_on_normal_data(world, runtime):
    sc = Scenario(runtime)
    for name in ("n1", "n2", "n3"):
        sc.actor(name)
    for name, hour in (("n1", 7), ("n2", 12), ("n3", 19)):
        sc.add(name, local_hour=hour, n=10)
        sc.add(name, local_hour=hour, n=2, outcome="not_found")
    sc.add("n1", local_hour=23, action="auth.login")  # not patient data
    sc.write()
    flags, _ = _flags(world, "auditor", sc, runtime)
    assert flags == {}


def test_anomaly_window_is_validated(world, runtime):
    r, request_id = get(world, "auditor", AN, since="2026-01-10T00:00:00Z", until="2026-01-01T00:00:00Z")
    assert r.status_code == 422
    assert one_event(runtime, request_id).outcome == "invalid"
    r, _ = get(world, "clinic_a", AN)
    assert r.status_code == 403


def test_peers_are_staff_at_the_same_kind_of_facility(world, runtime, monkeypatch):
    """A busy teaching hospital is compared with teaching hospitals, not with BHUs: reading 42
    children a day there is normal, while the same number at a BHU would stand out."""
    monkeypatch.setattr(runtime.settings.audit, "distinct_patients_min", 2)
    sc = Scenario(runtime)
    for name in ("h1", "h2", "h3"):
        sc.actor(name, code="F-LAH-01")  # teaching hospital
    for name in ("b1", "b2", "b3"):
        sc.actor(name, code="F-FSD-03")  # BHU
    for name, n in (("h1", 40), ("h2", 41), ("h3", 42), ("b1", 3), ("b2", 3), ("b3", 4)):
        sc.add(name, n=n)
    sc.write()
    flags, _ = _flags(world, "auditor", sc, runtime)
    # Mixed together, the hospitals' peer median would be 4 (threshold 12) and all three flagged.
    assert flags == {}, sorted(flags)
