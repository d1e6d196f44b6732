"""Recording a dose validates it (issue 4): impossible doses are refused outright; duplicates and
doses the schedule judges invalid are refused with the rule's code unless the clinic gives an
override reason, which is stored encrypted and audited without its text. Values are compared,
never printed."""

from __future__ import annotations

import json
import secrets
import uuid
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import text

from conftest import audit_events, is_postgres
from registry.clock import local_today

URL = "/api/v1/patients/{}/immunizations"


def _post(w, pid, who="clinic_a", **body):
    return w.client.post(URL.format(pid), json=body, headers=w.h(who))


def _refused(r, reason: str, field: str, overridable: bool) -> dict:
    assert r.status_code == 422, r.status_code
    assert r.headers["content-type"].startswith("application/problem+json")
    body = r.json()
    assert (body["reason"], body["overridable"]) == (reason, overridable)
    assert [e["field"] for e in body["errors"]] == [field]
    return body


def _event(rt, r):
    events = audit_events(rt, request_id=r.headers["X-Request-ID"])
    assert len(events) == 1, [(e.action, e.outcome) for e in events]
    return events[0]


def _detail(ev) -> dict:
    return ev.detail if isinstance(ev.detail, dict) else json.loads(ev.detail)


def _doses(w, pid):
    r = w.client.get(URL.format(pid), headers=w.h("clinic_a"))
    assert r.status_code == 200
    return r.json()


def test_the_clock_is_pakistan_time():
    """20:00 UTC on the 21st is 01:00 on the 22nd in Karachi: a dose given then is 'today'."""
    assert local_today(datetime(2026, 11, 21, 20, 0, tzinfo=UTC)) == date(2026, 11, 22)
    assert local_today(datetime(2026, 11, 21, 18, 59, tzinfo=UTC)) == date(2026, 11, 21)


def test_a_dose_given_today_in_karachi_is_accepted(world):
    today = local_today()
    pid = world.register(birth_date=(today - timedelta(days=2)).isoformat())["id"]
    r = _post(world, pid, vaccine="BCG", dose_number=1, date_given=today.isoformat())
    assert r.status_code == 201, r.json()
    assert (r.json()["validity"], r.json()["override_rule"]) == ("valid", None)


@pytest.mark.parametrize("case", ["before_birth", "in_future", "dose_number_out_of_range"])
def test_impossible_doses_are_refused_even_with_an_override(world, runtime, case):
    pid = world.register(birth_date="2026-06-01")["id"]
    body = {"vaccine": "BCG", "dose_number": 1, "date_given": "2026-06-02",
            "override_reason": "the clinic insists on recording it"}
    field = "date_given"
    if case == "before_birth":
        body["date_given"] = "2026-05-20"
    elif case == "in_future":
        body["date_given"] = (local_today() + timedelta(days=2)).isoformat()
    else:
        body["dose_number"], field = 3, "dose_number"
    r = _post(world, pid, **body)
    _refused(r, case, field, overridable=False)
    ev = _event(runtime, r)
    assert (ev.action, ev.outcome, _detail(ev)["rule"]) == ("immunization.create", "invalid", case)
    assert _doses(world, pid) == []


# (birth date, doses recorded first, the dose refused, the rule it breaks, the field named)
CASES = {
    "duplicate": ("2026-06-01", [("BCG", 1, "2026-06-02")], ("BCG", 1, "2026-06-20"), "duplicate", "dose_number"),
    "too_early_for_age": ("2026-06-01", [], ("PENTA", 1, "2026-07-01"), "too_early_for_age", "date_given"),
    "interval_too_short": ("2026-06-01", [("PENTA", 1, "2026-08-01")], ("PENTA", 2, "2026-08-15"), "interval_too_short",
                           "date_given"),
    "after_maximum_age": ("2024-06-01", [], ("ROTA", 1, "2026-07-01"), "after_maximum_age", "date_given"),
    "not_in_schedule": ("2026-01-01", [("OPV", 1, "2026-03-01"), ("OPV", 2, "2026-04-01"), ("OPV", 3, "2026-05-01")],
                        ("OPV", 4, "2026-06-01"), "not_in_schedule", None),
}


@pytest.mark.parametrize("case", [c for c in CASES if c != "not_in_schedule"])
def test_schedule_rules_refuse_with_their_reason(world, runtime, case):
    birth, before, (vaccine, n, day), rule, field = CASES[case]
    pid = world.register(birth_date=birth)["id"]
    for v, k, d in before:
        assert _post(world, pid, vaccine=v, dose_number=k, date_given=d).status_code == 201
    r = _post(world, pid, vaccine=vaccine, dose_number=n, date_given=day)
    body = _refused(r, rule, field, overridable=True)
    assert "override_reason" in body["detail"]
    ev = _event(runtime, r)
    assert (ev.outcome, _detail(ev)["rule"]) == ("invalid", rule)
    assert len(_doses(world, pid)) == len(before), "a refused dose was written"


def test_a_dose_the_schedule_does_not_list_is_accepted(world):
    """OPV-4 (a campaign or booster dose) is in the vocabulary, not in the routine schedule."""
    birth, before, (vaccine, n, day), validity, _ = CASES["not_in_schedule"]
    pid = world.register(birth_date=birth)["id"]
    for v, k, d in before:
        assert _post(world, pid, vaccine=v, dose_number=k, date_given=d).status_code == 201
    r = _post(world, pid, vaccine=vaccine, dose_number=n, date_given=day)
    assert r.status_code == 201 and r.json()["validity"] == validity


def _raw_dose(rt, dose_id: str):
    with rt.sessions() as s:
        key = uuid.UUID(dose_id) if is_postgres(rt) else uuid.UUID(dose_id).hex
        return s.execute(text("SELECT override_rule, override_reason_ct FROM immunizations WHERE id = :i"), {"i": key}).one()


def _stored_anywhere(rt, marker: str, dose_id: str) -> bool:
    """The marker in the storage itself: the SQLite file (and its WAL), or the row as text."""
    if is_postgres(rt):
        with rt.sessions() as s:
            row = s.execute(text("SELECT t::text FROM immunizations t WHERE id = :i"), {"i": uuid.UUID(dose_id)}).scalar_one()
        return marker in row
    path = Path(rt.engine.url.database)
    data = b"".join(p.read_bytes() for p in (path, Path(f"{path}-wal")) if p.exists())
    return marker.encode() in data


def test_override_records_the_dose_with_an_encrypted_reason_and_an_audited_rule(world, runtime):
    pid = world.register(birth_date="2026-06-01")["id"]
    marker = f"OverrideMarker{secrets.token_hex(4)}"
    reason = f"family leaving for Gulf tomorrow {marker}"
    short = _post(world, pid, vaccine="PENTA", dose_number=1, date_given="2026-07-01", override_reason="too short")
    assert short.status_code == 422 and [e["field"] for e in short.json()["errors"]] == ["override_reason"]
    r = _post(world, pid, vaccine="PENTA", dose_number=1, date_given="2026-07-01", override_reason=reason)
    assert r.status_code == 201, r.json()
    dose = r.json()
    assert (dose["override_rule"], dose["override_reason"] == reason) == ("too_early_for_age", True)
    assert (dose["validity"], dose["validity_reason"]) == ("invalid", "too_early_for_age")
    ev = _event(runtime, r)
    assert (ev.action, ev.outcome) == ("immunization.create", "success")
    assert _detail(ev) == {"override": True, "rule": "too_early_for_age"}
    as_text = json.dumps(_detail(ev))
    assert marker not in as_text and "PENTA" not in as_text
    rule, ct = _raw_dose(runtime, dose["id"])
    assert rule == "too_early_for_age" and ct is not None and marker.encode() not in bytes(ct)
    assert not _stored_anywhere(runtime, marker, dose["id"]), "the override reason is stored in plaintext"
    listed = {d["id"]: d for d in _doses(world, pid)}[dose["id"]]
    assert (listed["override_rule"], listed["override_reason"] == reason, listed["validity"]) == \
        ("too_early_for_age", True, "invalid")


def test_an_override_reason_on_a_valid_dose_is_not_kept(world, runtime):
    pid = world.register(birth_date="2026-06-01")["id"]
    r = _post(world, pid, vaccine="BCG", dose_number=1, date_given="2026-06-02", override_reason="just in case anything")
    assert r.status_code == 201
    assert (r.json()["override_rule"], r.json()["override_reason"], r.json()["validity"]) == (None, None, "valid")
    assert _raw_dose(runtime, r.json()["id"]) == (None, None)
    assert _detail(_event(runtime, r)) == {}


def test_duplicate_override_and_validity_in_the_list(world):
    pid = world.register(birth_date="2026-06-01")["id"]
    first = _post(world, pid, vaccine="BCG", dose_number=1, date_given="2026-06-02").json()
    again = _post(world, pid, vaccine="BCG", dose_number=1, date_given="2026-07-02",
                  override_reason="revaccinated: no scar after 8 weeks")
    assert again.status_code == 201 and again.json()["override_rule"] == "duplicate"
    listed = {d["id"]: d for d in _doses(world, pid)}
    assert listed[first["id"]]["validity"] == "valid"
    assert (listed[again.json()["id"]]["validity"], listed[again.json()["id"]]["validity_reason"]) == ("invalid", "duplicate")


def test_corrections_are_validated_too(world, runtime):
    pid = world.register(birth_date="2026-06-01")["id"]
    dose = _post(world, pid, vaccine="PENTA", dose_number=1, date_given="2026-07-13").json()
    amend = f"/api/v1/immunizations/{dose['id']}/correct"
    h = world.h("clinic_a", **{"If-Match": '"1"'})
    r = world.client.post(amend, json={"date_given": "2026-07-01", "reason": "wrong date"}, headers=h)
    _refused(r, "too_early_for_age", "date_given", overridable=True)
    ev = _event(runtime, r)
    assert (ev.action, ev.outcome) == ("immunization.correct", "invalid")
    # correcting a dose is not a duplicate of itself
    r = world.client.post(amend, json={"lot_number": "PN-1", "reason": "lot typo"}, headers=h)
    assert r.status_code == 201 and r.json()["override_rule"] is None
    new = r.json()["id"]
    r = world.client.post(f"/api/v1/immunizations/{new}/correct", headers=h,
                          json={"date_given": "2026-07-01", "reason": "real date", "override_reason": "card shows this date"})
    assert r.status_code == 201 and r.json()["override_rule"] == "too_early_for_age"
    detail = _detail(_event(runtime, r))
    assert detail["override"] is True and detail["rule"] == "too_early_for_age" and "card shows" not in json.dumps(detail)


def test_a_resent_offline_dose_is_a_conflict_on_its_id_not_a_duplicate(world):
    pid = world.register(birth_date="2026-06-01")["id"]
    body = {"id": str(uuid.uuid4()), "vaccine": "BCG", "dose_number": 1, "date_given": "2026-06-02"}
    assert _post(world, pid, **body).status_code == 201
    r = _post(world, pid, **body)
    assert r.status_code == 409 and r.json()["errors"][0]["field"] == "id"


def test_the_parsed_schedule_is_cached_per_runtime(world, runtime):
    """Schedule rows never change, so a parse is kept by row id for the process's lifetime."""
    pid = world.register(birth_date="2026-06-01")["id"]
    assert _post(world, pid, vaccine="BCG", dose_number=1, date_given="2026-06-02").status_code == 201
    with runtime.sessions() as s:
        row, first = runtime.schedules.in_force(s, "PK-PB", local_today())
        _, second = runtime.schedules.in_force(s, "PK-PB", local_today())
    assert row is not None and first is second


@pytest.mark.parametrize("second", [("PENTA", 1), ("PENTA", 2)])
def test_recording_and_the_list_state_the_same_validity_after_an_invalid_dose(world, second):
    """Penta-1 too early (recorded with an override), then the series goes on: a repeated
    Penta-1, or a dose recorded as Penta-2, fills the Penta-1 slot and is valid (the engine fills
    slots in date order), then a third dose. Each response states the validity the list states
    for the same dose."""
    pid = world.register(birth_date="2026-06-01")["id"]
    early = _post(world, pid, vaccine="PENTA", dose_number=1, date_given="2026-07-01", override_reason="card shows this date")
    assert early.status_code == 201, early.json()
    responses = [early.json()]
    vaccine, number = second
    r = _post(world, pid, vaccine=vaccine, dose_number=number, date_given="2026-07-20")
    assert r.status_code == 201, r.json()  # valid: no override needed, not a duplicate of an invalid dose
    responses.append(r.json())
    r = _post(world, pid, vaccine="PENTA", dose_number=3 if number == 2 else 2, date_given="2026-08-20")
    assert r.status_code == 201, r.json()
    responses.append(r.json())
    listed = {d["id"]: d for d in _doses(world, pid)}
    said = [(d["validity"], d["validity_reason"]) for d in responses]
    assert said == [(listed[d["id"]]["validity"], listed[d["id"]]["validity_reason"]) for d in responses]
    assert said == [("invalid", "too_early_for_age"), ("valid", None), ("valid", None)]
