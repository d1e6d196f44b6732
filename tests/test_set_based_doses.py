"""Set-based dose recording (registry/immunizations/batch.py) against the single-record path.

The key property: a batch sync upload or a FHIR Bundle whose doses are judged and written
set-based gives the same per-item results and the same audit events as the same items run one
by one through `immunizations.service.record` (the path the set-based code replaced, still used
for the other item kinds and as the fallback). Each scenario runs twice on identically built
children, once with the one-by-one path patched in, and the two runs are compared with ids
replaced by labels.
"""

from __future__ import annotations

import uuid
from datetime import timedelta

import pytest
from sqlalchemy import func, select

from conftest import audit_events, new_child
from registry.clock import local_today
from registry.fhir import bundle as fhir_bundle
from registry.fhir import codes
from registry.immunizations.models import Immunization
from registry.reports.models import DirtyPatient
from registry.sync import batch as sync_batch
from registry.sync.models import SyncReceipt

URL = "/api/v1/sync/batch"
REASON = "given again on purpose by the vaccinator"


def _one_by_one_sync(ctx, run):
    return [sync_batch._one(ctx, index, item) for index, item in run]


def _one_by_one_fhir(ctx, run, entries, results):
    for i, entry in entries:
        results[i] = fhir_bundle._batch_entry(ctx, run, i, entry, "Immunization")


class Labels:
    def __init__(self) -> None:
        self.names: dict[str, str] = {}

    def add(self, value, name: str) -> str:
        self.names[str(value)] = name
        return str(value)

    def __call__(self, value):
        return self.names.get(str(value), "?" if value is not None else None)


def _dose(labels: Labels, name: str, dose_id: str | None = None, **kw) -> dict:
    return {"id": dose_id or labels.add(uuid.uuid4(), name), "vaccine": "BCG", "dose_number": 1, "date_given": "2026-06-02", **kw}


def _sync_scenario(world, client) -> tuple[list[dict], Labels]:
    """Own child, visiting child (another province), unknown child, a child with a dose already
    recorded on the single route; valid, duplicate (in the batch and in the database), schedule-
    refused, overridden, impossible, conflicting-id and resent items."""
    labels = Labels()
    own = labels.add(world.register("clinic_a")["id"], "own")
    visiting = labels.add(world.register("clinic_c")["id"], "visiting")
    known = labels.add(world.register("clinic_a")["id"], "known")
    unknown = labels.add(uuid.uuid4(), "unknown")
    first = _dose(labels, "known.bcg")
    r = client.post(f"/api/v1/patients/{known}/immunizations", json=first, headers=world.h("clinic_a"))
    assert r.status_code == 201, r.json()
    tomorrow = (local_today() + timedelta(days=1)).isoformat()
    bcg = _dose(labels, "own.bcg")
    new = labels.add(uuid.uuid4(), "new")
    items = [
        {"op": "dose.record", "patient_id": own, "data": bcg},
        {"op": "dose.record", "patient_id": own, "data": _dose(labels, "own.bcg.again")},  # duplicate of the one above
        {"op": "dose.record", "patient_id": own, "data": _dose(labels, "own.bcg.over", override_reason=REASON)},
        {"op": "dose.record", "patient_id": own, "data": _dose(labels, "own.opv0", vaccine="OPV", dose_number=0)},
        {"op": "dose.record", "patient_id": own, "data": _dose(labels, "own.opv1.early", vaccine="OPV", date_given="2026-06-10")},
        {"op": "dose.record", "patient_id": own, "data": _dose(labels, "own.opv1", vaccine="OPV", date_given="2026-06-10",
                                                                override_reason=REASON)},
        {"op": "dose.record", "patient_id": own, "data": _dose(labels, "own.before", vaccine="Penta", date_given="2026-01-01")},
        {"op": "dose.record", "patient_id": own, "data": _dose(labels, "own.future", vaccine="Penta", date_given=tomorrow)},
        {"op": "dose.record", "patient_id": own, "data": _dose(labels, "own.range", vaccine="OPV", dose_number=9)},
        {"op": "dose.record", "patient_id": visiting, "data": _dose(labels, "visiting.opv0", vaccine="OPV", dose_number=0)},
        {"op": "dose.record", "patient_id": unknown, "data": _dose(labels, "unknown.bcg")},
        {"op": "dose.record", "patient_id": known, "data": _dose(labels, "known.bcg.again")},  # duplicate in the database
        {"op": "dose.record", "patient_id": known, "data": first},  # id already recorded on the single route
        {"op": "dose.record", "patient_id": own, "data": bcg},  # resent in the same batch: duplicate
        {"op": "dose.record", "patient_id": own, "data": {**bcg, "lot_number": "X1"}},  # same id, other content
        {"op": "dose.record", "patient_id": own, "data": _dose(labels, "own.bad", vaccine="NOPE")},  # malformed
        {"op": "patient.create", "data": new_child(id=new)},
        {"op": "dose.record", "patient_id": new, "data": _dose(labels, "new.bcg")},  # a patient created in the batch
    ]
    return items, labels


def _events(runtime, rid: str, labels: Labels) -> list[tuple]:
    rows = [(e.action, e.outcome, e.resource_type, labels(e.resource_id), labels(e.patient_id), e.outside_capture_scope,
             sorted((e.detail or {}).items())) for e in audit_events(runtime, request_id=rid)]
    return sorted(rows, key=repr)


def _sync_run(world, client, runtime) -> tuple[list, list, dict]:
    items, labels = _sync_scenario(world, client)
    rid = uuid.uuid4().hex
    r = client.post(URL, json={"items": items}, headers=world.h("clinic_a", **{"X-Request-ID": rid}))
    assert r.status_code == 200, r.json()
    results = [{k: (labels(v) if k in ("id", "replacement_id") else v) for k, v in x.items() if k not in ("health_id", "access_code")}
               for x in r.json()["results"]]
    ids = [uuid.UUID(k) for k in labels.names]
    with runtime.sessions() as s:
        stored = {labels(d.id): (d.vaccine, d.dose_number, d.override_rule, d.override_reason_ct is not None)
                  for d in s.execute(select(Immunization).where(Immunization.id.in_(ids))).scalars()}
        stored["receipts"] = s.execute(select(func.count()).select_from(SyncReceipt).where(SyncReceipt.record_id.in_(ids))).scalar_one()
        stored["queued"] = s.execute(select(func.count()).select_from(DirtyPatient).where(DirtyPatient.patient_id.in_(ids))).scalar_one()
    return results, _events(runtime, rid, labels), stored


def test_a_mixed_batch_gives_the_results_and_events_of_its_items_one_by_one(world, client, runtime, monkeypatch):
    set_based = _sync_run(world, client, runtime)
    with monkeypatch.context() as m:
        m.setattr(sync_batch, "_doses", _one_by_one_sync)
        one_by_one = _sync_run(world, client, runtime)
    assert set_based[0] == one_by_one[0]
    assert set_based[1] == one_by_one[1]
    assert set_based[2] == one_by_one[2]
    outcomes = [(x["result"], x.get("reason"), x.get("code")) for x in set_based[0]]
    assert outcomes == [
        ("created", None, None), ("rejected", "invalid", "duplicate"), ("created", None, None), ("created", None, None),
        ("rejected", "invalid", "too_early_for_age"), ("created", None, None), ("rejected", "invalid", "before_birth"),
        ("rejected", "invalid", "in_future"), ("rejected", "invalid", "dose_number_out_of_range"), ("created", None, None),
        ("rejected", "not_found", None), ("rejected", "invalid", "duplicate"), ("rejected", "conflict", None),
        ("duplicate", None, None), ("rejected", "conflict", None), ("rejected", "invalid", None), ("created", None, None),
        ("created", None, None)]
    visiting = [e for e in set_based[1] if e[0] == "immunization.create" and e[1] == "success" and e[4] == "visiting"]
    assert [e[5] for e in visiting] == [True]


def test_a_resent_batch_is_all_duplicates_and_other_content_a_conflict(world, client, runtime):
    items, _ = _sync_scenario(world, client)
    doses = [i for i in items[:6] + items[9:10]]
    first = client.post(URL, json={"items": doses}, headers=world.h("clinic_a")).json()
    again = client.post(URL, json={"items": doses}, headers=world.h("clinic_a")).json()
    assert [x["result"] for x in again["results"]] == [
        "duplicate" if x["result"] == "created" else "rejected" for x in first["results"]]
    changed = [{**doses[0], "data": {**doses[0]["data"], "date_given": "2026-06-03"}}]
    [res] = client.post(URL, json={"items": changed}, headers=world.h("clinic_a")).json()["results"]
    assert (res["result"], res["reason"], res["field"]) == ("rejected", "conflict", "data.id")


def test_a_dose_written_set_based_reads_as_one_written_alone(world, client):
    p = world.register()
    item = _dose(Labels(), "x", vaccine="OPV", dose_number=1, date_given="2026-06-10", override_reason=REASON)
    r = client.post(URL, json={"items": [{"op": "dose.record", "patient_id": p["id"], "data": item}]}, headers=world.h("clinic_a"))
    assert r.json()["created"] == 1
    [listed] = client.get(f"/api/v1/patients/{p['id']}/immunizations", headers=world.h("clinic_a")).json()
    assert listed["override_reason"] == REASON and listed["override_rule"] == "too_early_for_age"
    void = client.post(f"/api/v1/immunizations/{item['id']}/void", json={"reason": "entered by mistake"},
                       headers=world.h("clinic_a", **{"If-Match": '"1"'}))
    assert void.status_code == 200, void.json()


def _fhir_dose(patient: str, vaccine="BCG", dose=1, when="2026-06-02", reason: str | None = None) -> dict:
    res = {"resourceType": "Immunization", "id": str(uuid.uuid4()), "status": "completed",
           "vaccineCode": {"coding": [{"system": codes.EPI_ANTIGEN, "code": vaccine}]},
           "patient": {"reference": patient}, "occurrenceDateTime": when,
           "protocolApplied": [{"doseNumberPositiveInt": dose} if dose else {"doseNumberString": "0"}]}
    if reason:
        res["extension"] = [{"url": codes.EXT_OVERRIDE_REASON, "valueString": reason}]
    return res


def _fhir_run(world, client, runtime, kind: str) -> tuple[int, list, list]:
    labels = Labels()
    own = labels.add(world.register("clinic_a")["id"], "own")
    visiting = labels.add(world.register("clinic_c")["id"], "visiting")
    resources = [_fhir_dose(f"Patient/{own}"), _fhir_dose(f"Patient/{own}"), _fhir_dose(f"Patient/{visiting}", "OPV", 0),
                 _fhir_dose(f"Patient/{own}", "OPV", 1, "2026-06-10", REASON), _fhir_dose(f"Patient/{uuid.uuid4()}"),
                 _fhir_dose(f"Patient/{own}", "OPV", 1, "2026-06-10"), {**_fhir_dose(f"Patient/{own}"), "status": "done"}]
    if kind == "transaction":
        resources = resources[:1] + resources[2:3] + resources[5:6] + resources[4:5]  # the schedule refusal comes first
    for n, res in enumerate(resources):
        labels.add(res["id"], f"dose{n}")
    body = {"resourceType": "Bundle", "type": kind,
            "entry": [{"resource": res, "request": {"method": "POST", "url": "Immunization"}} for res in resources]}
    rid = uuid.uuid4().hex
    r = client.post("/fhir/R4", json=body, headers=world.h("clinic_a", **{"X-Request-ID": rid}))
    out = r.json()
    entries = [(e["response"]["status"], labels(e.get("resource", {}).get("id")),
                e["response"].get("outcome", {}).get("issue", [{}])[0].get("expression")) for e in out.get("entry", [])]
    return r.status_code, entries or out["issue"], _events(runtime, rid, labels)


@pytest.mark.parametrize("kind", ["batch", "transaction"])
def test_a_fhir_bundle_gives_the_responses_and_events_of_its_entries_one_by_one(world, client, runtime, monkeypatch, kind):
    set_based = _fhir_run(world, client, runtime, kind)
    with monkeypatch.context() as m:
        if kind == "batch":
            m.setattr(fhir_bundle, "_batch_doses", _one_by_one_fhir)
        else:
            m.setattr(fhir_bundle._Run, "doses", _sequential_doses)
        one_by_one = _fhir_run(world, client, runtime, kind)
    assert set_based == one_by_one
    if kind == "batch":
        assert [e[0][:3] for e in set_based[1]] == ["201", "422", "201", "201", "404", "422", "400"]
    else:
        assert set_based[0] == 422 and [e for e in set_based[2] if e[1] != "success"] == [
            ("immunization.create", "invalid", "Immunization", None, "own", False, [("field", "date_given"), ("rule", "too_early_for_age")])]


def _sequential_doses(self, todo, *, stop_on_error):
    """The transaction's doses through `service.record` one at a time (the path before the set-based one)."""
    from registry.errors import DomainError
    from registry.immunizations import batch as dose_batch
    from registry.immunizations import service as doses

    judged = []
    for i, (pid, data) in todo:
        try:
            view = doses.record(self.ctx, pid, data)
            judged.append((i, dose_batch.Recorded({**view.model_dump(), "custodian": None}, None, False)))
        except DomainError as exc:
            judged.append((i, exc))
            break
    return judged, dose_batch.Plan()


def test_a_dose_id_taken_concurrently_rolls_the_run_back_and_goes_one_by_one(world, client, runtime, monkeypatch):
    """The snapshot misses an id another upload committed meanwhile: the run's writes fail on the
    key, roll back to their savepoint, and its items go through the single path (a conflict for
    the taken id, the others created, each with its own events and nothing written twice)."""
    from registry.immunizations import batch as dose_batch

    labels = Labels()
    p = world.register()
    taken = _dose(labels, "taken")
    assert client.post(f"/api/v1/patients/{p['id']}/immunizations", json=taken, headers=world.h("clinic_a")).status_code == 201
    snapshot = dose_batch._snapshot
    monkeypatch.setattr(dose_batch, "_snapshot", lambda *a: snapshot(*a)[:2] + (set(),))  # the other upload committed after it
    items = [{"op": "dose.record", "patient_id": p["id"], "data": _dose(labels, "opv0", vaccine="OPV", dose_number=0)},
             {"op": "dose.record", "patient_id": p["id"], "data": {**taken, "vaccine": "Penta", "date_given": "2026-07-15"}}]
    rid = uuid.uuid4().hex
    r = client.post(URL, json={"items": items}, headers=world.h("clinic_a", **{"X-Request-ID": rid}))
    assert r.status_code == 200, r.json()
    assert [(x["result"], x.get("reason"), x.get("field")) for x in r.json()["results"]] == [
        ("created", None, None), ("rejected", "conflict", "id")]
    assert sorted((e.action, e.outcome) for e in audit_events(runtime, request_id=rid)) == [
        ("immunization.create", "conflict"), ("immunization.create", "success"), ("sync.batch", "success")]
    listed = client.get(f"/api/v1/patients/{p['id']}/immunizations", headers=world.h("clinic_a")).json()
    assert sorted(d["vaccine"] for d in listed) == ["BCG", "OPV"]


def test_events_written_set_based_are_sealed_and_verify(world, client, runtime):
    from registry.audit_log import sealing

    sealing.seal_all(runtime)
    items, _ = _sync_scenario(world, client)
    rid = uuid.uuid4().hex
    assert client.post(URL, json={"items": items}, headers=world.h("clinic_a", **{"X-Request-ID": rid})).status_code == 200
    written = audit_events(runtime, request_id=rid)
    assert len([e for e in written if e.outcome == "success" and e.action == "immunization.create"]) == 6
    sealing.seal_all(runtime)
    report = sealing.verify_database(runtime)
    assert report.unsealed == 0 and report.tree_size >= len(written)
