"""Doses not given (issue 12, item 4): status `not-done` with a coded reason on the dose route,
the batch sync and FHIR; a refusal never counts as a dose (schedule engine, due lists,
duplicate check); bad input names the field, never echoes the value and writes nothing.
Values are compared, never printed."""

from __future__ import annotations

import uuid

from sqlalchemy import func, select

from conftest import audit_events
from registry.fhir import codes
from registry.immunizations import not_done
from registry.immunizations.models import Immunization

SECRET = "Zarqa-private-7731"  # a value that must never come back in an error


def _record(w, pid, who="clinic_a", **body):
    dose = {"vaccine": "PENTA", "dose_number": 1, "date_given": "2026-07-14", **body}
    return w.client.post(f"/api/v1/patients/{pid}/immunizations", json=dose, headers=w.h(who))


def _rows(rt, pid) -> int:
    with rt.sessions() as s:
        return s.execute(select(func.count()).select_from(Immunization).where(Immunization.patient_id == uuid.UUID(pid))).scalar_one()


def _events(rt, r) -> list:
    return audit_events(rt, request_id=r.headers["X-Request-ID"])


def test_value_set_is_data_and_maps_to_v3_act_reason():
    reasons = not_done.reasons()
    assert {"refusal-safety", "refusal-religious", "refusal-too-many", "refusal-child-sick", "contraindication",
            "stock-out", "child-absent", "other"} <= set(reasons)
    assert {r["group"] for r in reasons.values()} <= set(not_done.groups())
    assert reasons["refusal-religious"]["v3"] == "RELIG" and reasons["stock-out"]["v3"] == "OSTOCK"
    assert reasons["contraindication"]["v3"] == "MEDPREC" and reasons["refusal-safety"]["v3"] == "VACSAF"
    assert "v3" not in reasons["child-absent"]  # an NHR code only
    fhir = not_done.to_fhir("refusal-religious")
    assert {(c["system"], c["code"]) for c in fhir["coding"]} == {(not_done.system(), "refusal-religious"),
                                                                 (not_done.V3_ACT_REASON, "RELIG")}
    assert not_done.from_fhir(fhir) == "refusal-religious"
    assert not_done.from_fhir({"coding": [{"system": not_done.V3_ACT_REASON, "code": "PATOBJ"}]}) == "refusal-other"
    assert not_done.from_fhir({"coding": [{"system": "http://example.org", "code": "x"}]}) is None


def test_a_refusal_is_recorded_audited_and_never_counts_as_a_dose(world, runtime):
    child = world.register("clinic_a")
    pid = child["id"]
    assert _record(world, pid, vaccine="BCG", date_given="2026-06-02").status_code == 201
    r = _record(world, pid, status="not-done", not_done_reason="refusal-safety")
    assert r.status_code == 201, r.json()
    body = r.json()
    assert (body["status"], body["not_done_reason"], body["validity"], body["lot_number"]) == \
        ("not-done", "refusal-safety", None, None)
    [ev] = [e for e in _events(runtime, r) if e.action == "immunization.create"]
    assert ev.outcome == "success" and ev.detail == {"status": "not-done"}  # never the reason, the vaccine or the dose
    # the schedule engine ignores it: PENTA-1 is still due, and only BCG is judged
    s = world.client.get(f"/api/v1/patients/{pid}/schedule", params={"as_of": "2026-07-14"}, headers=world.h("clinic_a"))
    assert s.status_code == 200
    assert {(d["vaccine"], d["dose_number"]) for d in s.json()["doses"]} == {("BCG", 1)}
    forecast = {(f["vaccine"], f["dose_number"]): f["status"] for f in s.json()["forecast"]}
    assert forecast[("PENTA", 1)] == "due"
    # the due list still shows the child due for PENTA-1
    d = world.client.get(f"/api/v1/facilities/{world.facilities['a']}/due-list",
                         params={"from": "2026-07-13", "to": "2026-07-20"}, headers=world.h("clinic_a"))
    assert d.status_code == 200, d.json()
    [row] = [i for i in d.json()["items"] if i["patient_id"] == pid]
    assert ("PENTA", 1) in {(x["vaccine"], x["dose_number"]) for x in row["doses"]}
    # not a duplicate either: the dose given later the same week is recorded without an override
    later = _record(world, pid, date_given="2026-07-16")
    assert later.status_code == 201, later.json()
    assert later.json()["status"] == "completed" and later.json()["validity"] == "valid"
    listed = world.client.get(f"/api/v1/patients/{pid}/immunizations", headers=world.h("clinic_a")).json()
    assert [x["status"] for x in listed if x["vaccine"] == "PENTA"] == ["not-done", "completed"]


def test_a_not_done_record_entered_in_error_is_voided(world):
    pid = world.register("clinic_a")["id"]
    r = _record(world, pid, status="not-done", not_done_reason="stock-out")
    assert r.status_code == 201
    v = world.client.post(f"/api/v1/immunizations/{r.json()['id']}/void", json={"reason": "wrong child"},
                          headers=world.h("clinic_a", **{"If-Match": '"1"'}))
    assert v.status_code == 200, v.json()
    assert v.json()["status"] == "entered-in-error"


def test_bad_not_done_input_names_the_field_echoes_nothing_and_writes_nothing(world, runtime):
    pid = world.register("clinic_a")["id"]
    cases = [
        ({"status": "not-done"}, "not_done_reason"),
        ({"status": "not-done", "not_done_reason": SECRET}, "not_done_reason"),
        ({"not_done_reason": "stock-out"}, "not_done_reason"),  # a reason on a dose given
        ({"status": "not-done", "not_done_reason": "stock-out", "lot_number": "LOT-77"}, "lot_number"),
        ({"status": "not-done", "not_done_reason": "stock-out", "override_reason": "given twice by mistake"}, "override_reason"),
        ({"status": "not-done", "not_done_reason": "stock-out", "date_given": "2026-05-01"}, "date_given"),  # before birth
        ({"status": "not-done", "not_done_reason": "stock-out", "date_given": "2099-01-01"}, "date_given"),
        ({"status": SECRET, "not_done_reason": "stock-out"}, "status"),
    ]
    for body, field in cases:
        r = _record(world, pid, **body)
        assert r.status_code == 422, (field, r.status_code)
        problem = r.json()
        assert r.headers["content-type"].startswith("application/problem+json")
        assert field in {e["field"].split(".")[-1] for e in problem["errors"]}, field
        assert SECRET not in r.text and "LOT-77" not in r.text
    assert _rows(runtime, pid) == 0
    # the refusals that reached the service are audited `invalid`, with the field only
    invalid = [e for e in audit_events(runtime, action="immunization.create", outcome="invalid")
               if e.patient_id is not None and str(e.patient_id) == pid]
    assert {(e.detail or {}).get("field") for e in invalid} >= {"lot_number", "override_reason", "date_given"}


def test_batch_sync_accepts_not_done_items(world, runtime):
    pid = world.register("clinic_a")["id"]
    ok, bad = str(uuid.uuid4()), str(uuid.uuid4())
    items = [
        {"op": "dose.record", "patient_id": pid, "data": {"id": ok, "vaccine": "OPV", "dose_number": 1, "date_given": "2026-07-14",
                                                         "status": "not-done", "not_done_reason": "child-absent"}},
        {"op": "dose.record", "patient_id": pid, "data": {"id": bad, "vaccine": "OPV", "dose_number": 2, "date_given": "2026-07-14",
                                                         "status": "not-done", "not_done_reason": "child-absent",
                                                         "lot_number": "L1"}},
    ]
    r = world.client.post("/api/v1/sync/batch", json={"items": items}, headers=world.h("clinic_a"))
    assert r.status_code == 200, r.json()
    res = r.json()["results"]
    assert [x["result"] for x in res] == ["created", "rejected"]
    assert res[1]["field"] == "lot_number"
    with runtime.sessions() as s:
        row = s.execute(select(Immunization).where(Immunization.id == uuid.UUID(ok))).scalar_one()
        assert (row.status, row.not_done_reason) == ("not-done", "child-absent")
        assert s.get(Immunization, uuid.UUID(bad)) is None


def test_fhir_not_done_round_trips_with_status_reason(world):
    c = world.client
    pid = world.register("clinic_a")["id"]
    res = {"resourceType": "Immunization", "status": "not-done",
           "statusReason": {"coding": [{"system": not_done.V3_ACT_REASON, "code": "RELIG"}]},
           "vaccineCode": {"coding": [{"system": codes.EPI_ANTIGEN, "code": "PENTA"}]},
           "patient": {"reference": f"Patient/{pid}"}, "occurrenceDateTime": "2026-07-14",
           "protocolApplied": [{"doseNumberPositiveInt": 1}]}
    r = c.post("/fhir/R4/Immunization", json=res, headers=world.h("clinic_a"))
    assert r.status_code == 201, r.json()
    back = c.get(f"/fhir/R4/Immunization/{r.json()['id']}", headers=world.h("clinic_a")).json()
    assert back["status"] == "not-done"
    got = {(x["system"], x["code"]) for x in back["statusReason"]["coding"]}
    assert got == {(not_done.system(), "refusal-religious"), (not_done.V3_ACT_REASON, "RELIG")}
    found = c.get("/fhir/R4/Immunization", params={"patient": f"Patient/{pid}", "status": "not-done"}, headers=world.h("clinic_a"))
    assert found.status_code == 200 and len(found.json().get("entry", [])) == 1
    # no reason that maps: refused, naming statusReason
    bad = {**res, "statusReason": {"coding": [{"system": "http://example.org/x", "code": SECRET}]}}
    r = c.post("/fhir/R4/Immunization", json=bad, headers=world.h("clinic_a"))
    assert r.status_code in (400, 422) and r.json()["resourceType"] == "OperationOutcome"
    assert r.json()["issue"][0]["expression"] == ["Immunization.statusReason"] and SECRET not in r.text
    r = c.post("/fhir/R4/Immunization", json={**res, "lotNumber": "LOT-77"}, headers=world.h("clinic_a"))
    assert r.status_code == 422 and r.json()["issue"][0]["expression"] == ["Immunization.lotNumber"]


def test_bulk_import_keeps_a_not_done_record_as_not_done(world, runtime, tmp_path):
    """`nhr import` of FHIR NDJSON: a not-done Immunization is stored not-done with its reason
    (never as a completed dose), is no duplicate of the dose given later, and one with a lot
    number is rejected by field."""
    import json

    from registry.bulk import importer

    pid = world.register("clinic_a")["id"]

    def imm(status, when, **over):
        res = {"resourceType": "Immunization", "status": status, "vaccineCode": codes.vaccine_codeable("PENTA"),
               "patient": {"reference": f"Patient/{pid}"}, "occurrenceDateTime": when,
               "protocolApplied": [{"doseNumberPositiveInt": 1}], **over}
        if status == "not-done":
            res["statusReason"] = not_done.to_fhir("refusal-religious")
        return res

    lines = [imm("not-done", "2026-07-14"), imm("completed", "2026-07-20"), imm("not-done", "2026-07-15", lotNumber="L9")]
    f = tmp_path / "doses.ndjson"
    f.write_text("\n".join(json.dumps(x) for x in lines) + "\n")
    res = importer.run(runtime, f, username=world.users["clinic_a"])
    assert (res.imported, res.rejected) == (2, 1)
    doses = world.client.get(f"/api/v1/patients/{pid}/immunizations", headers=world.h("clinic_a")).json()
    assert [(d["status"], d["not_done_reason"]) for d in doses] == [("not-done", "refusal-religious"), ("completed", None)]
