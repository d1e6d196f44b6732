"""Batch sync upload (issue 5): per-item results, safe full resend, same-batch references,
scope, conflicts, size bound, and audit (one event per item plus one per request)."""

from __future__ import annotations

import uuid

from sqlalchemy import func, select

from conftest import audit_events, new_child
from registry.immunizations.models import Immunization
from registry.patients.models import Patient

URL = "/api/v1/sync/batch"


def _count(rt, model, ids) -> int:
    with rt.sessions() as s:
        return s.execute(select(func.count()).select_from(model).where(model.id.in_([uuid.UUID(str(i)) for i in ids]))).scalar_one()


def _dose(dose_id=None, **kw):
    return {"id": dose_id or str(uuid.uuid4()), "vaccine": "BCG", "dose_number": 1, "date_given": "2026-06-02", **kw}


def test_mixed_batch_then_full_resend(world, client, runtime):
    pid, did, did2 = str(uuid.uuid4()), str(uuid.uuid4()), str(uuid.uuid4())
    items = [
        {"op": "patient.create", "data": new_child(id=pid)},
        {"op": "dose.record", "patient_id": pid, "data": _dose(did)},  # refers to the patient created just above
        {"op": "dose.record", "patient_id": pid, "data": _dose(did2, vaccine="OPV", dose_number=0)},
        {"op": "dose.record", "patient_id": pid, "data": _dose(vaccine="NOPE")},  # malformed: rejected alone
        {"op": "dose.record", "patient_id": pid, "data": _dose(date_given="2026-01-01")},  # before birth: domain rule
        {"op": "patient.create", "data": new_child()},  # no client id
        {"op": "dose.void", "dose_id": did2, "if_match": '"1"', "data": {"reason": "entered twice"}},
        {"op": "teleport"},
    ]
    rid = uuid.uuid4().hex
    r = client.post(URL, json={"items": items}, headers=world.h("clinic_a", **{"X-Request-ID": rid}))
    assert r.status_code == 200, r.json()
    res = r.json()["results"]
    assert [x["result"] for x in res] == ["created", "created", "created", "rejected", "rejected", "rejected", "created", "rejected"]
    assert res[0]["id"] == pid and res[0]["access_code"] and res[0]["health_id"]
    assert (res[3]["reason"], res[3]["field"]) == ("invalid", "data.vaccine")
    assert (res[4]["reason"], res[4]["field"]) == ("invalid", "date_given")
    assert (res[5]["reason"], res[5]["field"]) == ("invalid", "data.id")
    assert res[6]["version"] == 2 and res[7]["reason"] == "invalid"
    assert (r.json()["created"], r.json()["rejected"]) == (4, 4)
    # Audit: one event per applied item by its service, the refused domain rule kept, one summary.
    events = audit_events(runtime, request_id=rid)
    actions = sorted((e.action, e.outcome) for e in events)
    assert actions == sorted([("patient.create", "success"), ("immunization.create", "success"), ("immunization.create", "success"),
                              ("immunization.create", "invalid"), ("immunization.void", "success"), ("sync.batch", "success")])
    [summary] = [e for e in events if e.action == "sync.batch"]
    assert summary.detail["created"] == 4 and summary.detail["rejected"] == 4

    again = client.post(URL, json={"items": items}, headers=world.h("clinic_a"))
    assert again.status_code == 200
    res2 = again.json()["results"]
    assert [x["result"] for x in res2] == ["duplicate", "duplicate", "duplicate", "rejected", "rejected", "rejected", "duplicate", "rejected"]
    assert "access_code" not in res2[0]
    assert _count(runtime, Patient, [pid]) == 1 and _count(runtime, Immunization, [did, did2]) == 2
    listed = client.get(f"/api/v1/patients/{pid}/immunizations", headers=world.h("clinic_a")).json()
    assert len(listed) == 2 and {d["status"] for d in listed} == {"completed", "entered-in-error"}


def test_same_id_different_content_is_a_conflict_never_an_overwrite(world, client, runtime):
    pid = str(uuid.uuid4())
    first = new_child(id=pid)
    assert client.post(URL, json={"items": [{"op": "patient.create", "data": first}]}, headers=world.h("clinic_a")).json()["created"] == 1
    other = {**first, "given_name": first["given_name"] + "x"}
    r = client.post(URL, json={"items": [{"op": "patient.create", "data": other}]}, headers=world.h("clinic_a"))
    [res] = r.json()["results"]
    assert (res["result"], res["reason"], res["field"]) == ("rejected", "conflict", "data.id")
    read = client.get(f"/api/v1/patients/{pid}", headers=world.h("clinic_a")).json()
    assert read["given_name"] == first["given_name"] and read["version"] == 1


def test_scope_is_the_services_scope(world, client, runtime):
    """Items reach records exactly as the single routes do: another facility's dose cannot be
    amended (forbidden, audited denied), an unknown patient is not found, and a visiting child
    from another province may be vaccinated here (flagged outside capture scope)."""
    visiting = world.register("clinic_c")
    theirs = client.post(f"/api/v1/patients/{visiting['id']}/immunizations", json=_dose(), headers=world.h("clinic_c")).json()
    rid = uuid.uuid4().hex
    items = [{"op": "dose.void", "dose_id": theirs["id"], "if_match": '"1"', "data": {"reason": "not ours"}},
             {"op": "dose.record", "patient_id": str(uuid.uuid4()), "data": _dose()},
             {"op": "dose.record", "patient_id": visiting["id"], "data": _dose(vaccine="OPV", dose_number=0)}]
    r = client.post(URL, json={"items": items}, headers=world.h("clinic_a", **{"X-Request-ID": rid}))
    res = r.json()["results"]
    assert [(x["result"], x.get("reason")) for x in res] == [("rejected", "forbidden"), ("rejected", "not_found"), ("created", None)]
    events = audit_events(runtime, request_id=rid)
    [denied] = [e for e in events if e.outcome == "denied"]
    assert denied.action == "immunization.void" and str(denied.patient_id) == visiting["id"]
    assert [e.outside_capture_scope for e in events if e.action == "immunization.create" and e.outcome == "success"] == [True]
    listed = client.get(f"/api/v1/patients/{visiting['id']}/immunizations", headers=world.h("clinic_c")).json()
    assert {d["id"]: d["status"] for d in listed}[theirs["id"]] == "completed"


def test_correction_resend_is_a_duplicate_with_the_same_replacement(world, client):
    p = world.register()
    dose = client.post(f"/api/v1/patients/{p['id']}/immunizations", json=_dose(), headers=world.h("clinic_a")).json()
    item = {"op": "dose.correct", "dose_id": dose["id"], "if_match": '"1"', "data": {"date_given": "2026-06-03", "reason": "typo"}}
    a = client.post(URL, json={"items": [item]}, headers=world.h("clinic_a")).json()["results"][0]
    b = client.post(URL, json={"items": [item]}, headers=world.h("clinic_a")).json()["results"][0]
    assert a["result"] == "created" and b["result"] == "duplicate" and b["replacement_id"] == a["replacement_id"]


def test_items_need_their_permission_and_the_batch_its_own(world, client):
    r = client.post(URL, json={"items": [{"op": "patient.create", "data": new_child(id=str(uuid.uuid4()))}]},
                    headers=world.h("official_national"))
    assert r.status_code == 403


def test_batch_size_is_bounded(world, client, runtime):
    limit = runtime.settings.sync.batch_max_items
    r = client.post(URL, json={"items": [{"op": "teleport"}] * (limit + 1)}, headers=world.h("clinic_a"))
    assert r.status_code == 422 and r.json()["errors"][0]["field"] == "items"
    assert client.post(URL, json={"items": []}, headers=world.h("clinic_a")).status_code == 422


def test_batch_with_idempotency_key_replays(world, client, runtime):
    items = [{"op": "patient.create", "data": new_child(id=str(uuid.uuid4()))}]
    a = client.post(URL, json={"items": items}, headers=world.h("clinic_a", **{"Idempotency-Key": "day-1"}))
    b = client.post(URL, json={"items": items}, headers=world.h("clinic_a", **{"Idempotency-Key": "day-1"}))
    assert a.status_code == b.status_code == 200 and b.headers["idempotent-replayed"] == "true" and a.content == b.content


def test_someone_elses_receipt_is_not_seen(world, client, runtime):
    """The batch checks the caller's permission on the record before a receipt can answer: a
    clinic elsewhere resending another facility's items gets exactly the answer it would get if no
    receipt existed, so it learns neither that the upload happened nor whether its guess of the
    content matches (the receipt's MAC must not become an oracle)."""
    pid = str(uuid.uuid4())
    child = new_child(id=pid)
    mine = client.post(URL, json={"items": [{"op": "patient.create", "data": child}]}, headers=world.h("clinic_a")).json()
    assert mine["created"] == 1
    dose = client.post(f"/api/v1/patients/{pid}/immunizations", json=_dose(), headers=world.h("clinic_a")).json()
    void = {"op": "dose.void", "dose_id": dose["id"], "if_match": '"1"', "data": {"reason": "entered twice"}}
    assert client.post(URL, json={"items": [void]}, headers=world.h("clinic_a")).json()["created"] == 1

    def answer(item) -> tuple:
        [res] = client.post(URL, json={"items": [item]}, headers=world.h("clinic_c")).json()["results"]
        return res["result"], res.get("reason"), res.get("field")

    same = answer({"op": "patient.create", "data": child})
    guessed_wrong = answer({"op": "patient.create", "data": {**child, "given_name": child["given_name"] + "x"}})
    assert same == guessed_wrong and same[0] == "rejected"
    assert answer(void) == ("rejected", "forbidden", None)  # as for any dose of another facility, voided or not
    other = world.register()
    other_dose = client.post(f"/api/v1/patients/{other['id']}/immunizations", json=_dose(), headers=world.h("clinic_a")).json()
    assert answer({**void, "dose_id": other_dose["id"]}) == ("rejected", "forbidden", None)
    # The uploader still sees its receipt.
    again = client.post(URL, json={"items": [void]}, headers=world.h("clinic_a")).json()["results"][0]
    assert again["result"] == "duplicate"
