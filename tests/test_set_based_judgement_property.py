"""Property: the set-based judgement of an upload (registry/immunizations/batch.py, which reads only
the series of the batch's vaccines, or a child's whole history when a dose gets an inferred number)
gives every item the outcome, the stored dose numbers and the audit events that the items get one
by one through `immunizations.service.record` (which reads every dose of the child).

Each example draws a child's history (doses of several vaccines, some numbered, some reported with
no number, some not given) and an upload (doses of random vaccines, numbers, dates, overrides,
combination products by code), builds the same history for two children, uploads the same items
for each, once set-based and once one by one, and compares the two with ids replaced by positions.
Also: an upload that fails while writing leaves nothing of it written (no dose, receipt or event).
"""

from __future__ import annotations

import uuid
from datetime import date, timedelta

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import func, select

from conftest import audit_events
from registry.clock import local_today
from registry.immunizations.models import Immunization
from registry.sync import batch as sync_batch
from registry.sync.models import SyncReceipt

URL = "/api/v1/sync/batch"
REASON = "given on purpose by the vaccinator"
VACCINES = ("OPV", "PENTA", "BCG", "MR", "IPV", "PCV")
REPORTED = {"provenance": "reported", "report_origin": "home_record"}
COMBINATION = {"system": "http://hl7.org/fhir/sid/cvx", "code": "146"}  # PENTA + IPV: a component row, inferred


def _one_by_one(ctx, run):
    return [sync_batch._one(ctx, index, item) for index, item in run]


@st.composite
def _dose(draw, age_days: int, *, history: bool) -> dict:
    vaccine = draw(st.sampled_from(VACCINES))
    number = draw(st.one_of(st.none(), st.integers(0 if vaccine == "OPV" else 1, 3)))
    when = draw(st.integers(0 if history else -3, age_days + (0 if history else 2)))  # a few impossible dates
    dose = {"vaccine": vaccine, "date_given": when}
    if number is not None:
        dose["dose_number"] = number
    if history or draw(st.booleans()):  # a reported dose is never refused for the schedule
        dose.update(REPORTED)
    elif draw(st.booleans()):
        dose["override_reason"] = REASON
    if not history and draw(st.integers(0, 9)) == 0:
        dose = {k: v for k, v in dose.items() if k != "vaccine"} | {"code": COMBINATION}
    if draw(st.integers(0, 9)) == 0 and "code" not in dose:
        dose = {"vaccine": vaccine, "date_given": when, "status": "not-done", "not_done_reason": "refusal-parent"}
    return dose


@st.composite
def _scenario(draw):
    age = draw(st.integers(20, 700))
    history = draw(st.lists(_dose(age, history=True), max_size=8))
    upload = draw(st.lists(_dose(age, history=False), min_size=1, max_size=8))
    return age, history, upload


def _concrete(dose: dict, birth: date) -> dict:
    out = {**dose, "id": str(uuid.uuid4()), "date_given": (birth + timedelta(days=dose["date_given"])).isoformat()}
    return out


def _child(world, client, birth: date, history: list[dict]) -> str:
    pid = world.register(birth_date=birth.isoformat())["id"]
    for dose in history:  # one by one on the single route: the history as a registry in service has it
        r = client.post(f"/api/v1/patients/{pid}/immunizations", json=_concrete(dose, birth), headers=world.h("clinic_a"))
        assert r.status_code in (201, 422), r.json()  # 422: a duplicate or a not-done dose the rules refuse
    return pid


def _upload(world, client, runtime, pid: str, birth: date, upload: list[dict]) -> tuple:
    items = [{"op": "dose.record", "patient_id": pid, "data": _concrete(d, birth)} for d in upload]
    position = {item["data"]["id"]: f"item{n}" for n, item in enumerate(items)}
    rid = uuid.uuid4().hex
    r = client.post(URL, json={"items": items}, headers=world.h("clinic_a", **{"X-Request-ID": rid}))
    assert r.status_code == 200, r.json()
    results = [(x["result"], x.get("reason"), x.get("code"), x.get("field")) for x in r.json()["results"]]
    with runtime.sessions() as s:
        rows = s.execute(select(Immunization).where(Immunization.patient_id == uuid.UUID(pid))).scalars().all()
        by_id = {str(d.id): d for d in rows}
        # every stored dose of the child (history included), named by what it is rather than its id. An
        # inferred number is compared by series and date only, apart from its row: on one day, the
        # doses of a series whose number was given come first and the inferred ones follow in the order
        # of their ids (validation.inferred_numbers), and the ids differ between the two children
        stored = [(position.get(str(d.id)) or position.get(str(d.component_of)) or "history", d.vaccine, d.date_given,
                         None if d.dose_number_inferred else d.dose_number, d.dose_number_inferred, d.override_rule, d.status,
                         d.component_of is not None) for d in by_id.values()]
        stored.sort(key=repr)  # two rows may be equal up to a None and a number
        numbers = sorted((d.vaccine, d.date_given, d.dose_number) for d in by_id.values() if d.dose_number_inferred)
    events = sorted((e.action, e.outcome, position.get(str(e.resource_id), "-" if e.resource_id is None else "?"),
                     e.outside_capture_scope, sorted((e.detail or {}).items()) if e.action != "sync.batch" else None)
                    for e in audit_events(runtime, request_id=rid))
    return results, stored, numbers, events


@settings(max_examples=40, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(scenario=_scenario())
def test_the_set_based_judgement_equals_the_judgement_one_by_one(world, client, runtime, scenario):
    age, history, upload = scenario
    birth = local_today() - timedelta(days=age)
    a, b = _child(world, client, birth, history), _child(world, client, birth, history)
    set_based = _upload(world, client, runtime, a, birth, upload)
    with pytest.MonkeyPatch.context() as m:
        m.setattr(sync_batch, "_doses", _one_by_one)
        one_by_one = _upload(world, client, runtime, b, birth, upload)
    # inferred numbers (set_based[2]) included: the set-based path renumbers a child at each item
    # that has an inferred number, from the doses before it, as `service.record` does one by one
    # (a numbered dose recorded after an inferred one of its series leaves the inferred number as
    # it was; bench/RESULTS.md 2026-12-03 10:55 found the two paths disagreeing on this)
    assert set_based == one_by_one, [(x, y) for x, y in zip(set_based, one_by_one) if x != y]


def test_an_upload_that_fails_while_writing_leaves_nothing_written(world, client, runtime, monkeypatch):
    """A failure after the doses were judged and written (here: the trail's bookkeeping once the
    rows are in, which the sync and the event loop's paths both reach) answers 5xx and the unit
    of work rolls the whole upload back: no dose, receipt, queue mark or success event."""
    from registry.immunizations import batch as dose_batch

    p = world.register()
    ids = [str(uuid.uuid4()) for _ in range(3)]
    items = [{"op": "dose.record", "patient_id": p["id"], "data": {"id": i, "vaccine": v, "dose_number": n,
                                                                   "date_given": "2026-06-02", "override_reason": REASON}}
             for i, (v, n) in zip(ids, (("BCG", 1), ("OPV", 0), ("HEPB", 1)))]

    def failing(ctx, plan):
        raise RuntimeError("the disk is full")

    monkeypatch.setattr(dose_batch, "written", failing)
    rid = uuid.uuid4().hex
    r = client.post(URL, json={"items": items}, headers=world.h("clinic_a", **{"X-Request-ID": rid}))
    assert r.status_code >= 500
    monkeypatch.undo()
    with runtime.sessions() as s:
        written = s.execute(select(func.count()).select_from(Immunization).where(Immunization.id.in_([uuid.UUID(i) for i in ids]))).scalar_one()
        receipts = s.execute(select(func.count()).select_from(SyncReceipt).where(SyncReceipt.record_id.in_([uuid.UUID(i) for i in ids]))).scalar_one()
    assert (written, receipts) == (0, 0)
    assert [e for e in audit_events(runtime, request_id=rid) if e.outcome == "success"] == []
    # and the same upload, sent again, is recorded whole
    r = client.post(URL, json={"items": items}, headers=world.h("clinic_a"))
    assert r.status_code == 200 and r.json()["created"] == 3, r.json()


def test_a_dose_with_no_number_renumbers_the_other_series_as_one_by_one(world, client, runtime):
    """The set-based path reads only the batch's series, except for a child given a dose whose number
    is inferred: then, as `service.record` does, every inferred number of the child is brought up to
    date, another series' included (here a PENTA reported with no number before a numbered PENTA 1
    dated earlier was recorded, which left its inferred number stale)."""
    birth = local_today() - timedelta(days=300)
    history = [{"vaccine": "PENTA", "date_given": 120, **REPORTED},
               {"vaccine": "PENTA", "dose_number": 1, "date_given": 60, **REPORTED}]
    upload = [{"vaccine": "OPV", "date_given": 200, **REPORTED}]
    a, b = _child(world, client, birth, history), _child(world, client, birth, history)
    with runtime.sessions() as s:
        stale = s.execute(select(Immunization.dose_number).where(Immunization.patient_id == uuid.UUID(a),
                                                                 Immunization.dose_number_inferred.is_(True))).scalar_one()
    set_based = _upload(world, client, runtime, a, birth, upload)
    with pytest.MonkeyPatch.context() as m:
        m.setattr(sync_batch, "_doses", _one_by_one)
        one_by_one = _upload(world, client, runtime, b, birth, upload)
    assert set_based == one_by_one
    assert stale == 1 and [n for vaccine, _, n in set_based[2] if vaccine == "PENTA"] == [2]


def test_a_numbered_dose_after_an_inferred_one_leaves_its_number_as_one_by_one(world, client, runtime):
    """Within one upload, a PENTA with no number and then a numbered PENTA 1 dated earlier: one by
    one, the second dose does not renumber the first (`service.record` renumbers only for a dose
    whose number is inferred), so the first keeps the number it got; the set-based path must
    store the same numbers (it renumbered once after every item before)."""
    birth = local_today() - timedelta(days=300)
    upload = [{"vaccine": "PENTA", "date_given": 120, **REPORTED},
              {"vaccine": "PENTA", "dose_number": 1, "date_given": 60, **REPORTED}]
    a, b = _child(world, client, birth, []), _child(world, client, birth, [])
    set_based = _upload(world, client, runtime, a, birth, upload)
    with pytest.MonkeyPatch.context() as m:
        m.setattr(sync_batch, "_doses", _one_by_one)
        one_by_one = _upload(world, client, runtime, b, birth, upload)
    assert set_based == one_by_one
    assert [n for vaccine, _, n in set_based[2] if vaccine == "PENTA"] == [1]
