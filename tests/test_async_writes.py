"""Register and record a dose on the async unit of work (registry/async_unit.py, issue 17) answer
and audit exactly as the sync services do: one behaviour, two drivers.

Each scenario runs twice on the same database: through the routes as served (on PostgreSQL the
event loop's transaction; on SQLite the sync services in a worker thread), and with the async
pool hidden (`Runtime.aio` None: the sync services on PostgreSQL too). The answers (status,
problem fields, body shape and the values not derived from the random input) and the audit
events (action, outcome, resource type, scope flag, detail, subjects) must be the same.
Values are compared, never printed."""

from __future__ import annotations

import re
import uuid
from contextlib import contextmanager
from datetime import timedelta

import pytest
from sqlalchemy import select, update

from conftest import PG_URL, audit_events, is_postgres, new_child
from registry.clock import local_today
from registry.patients.models import Patient
from registry.runtime import Runtime
from registry.sync.models import IdempotencyKey
from security.audit.models import AuditEventSubjectRow

on_pg = pytest.mark.skipif(not PG_URL, reason="the async unit of work exists on PostgreSQL only")
_UUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")
# Fields whose values come from the random input or the moment: compared by presence only.
_VARYING = {"id", "health_id", "access_code", "given_name", "family_name", "display_name", "bform", "cnic", "phone",
            "address", "name", "created_at", "updated_at", "recorded_at", "patient_id", "request_id", "merged_into",
            "home_facility", "facility", "performer_id", "recorder_id", "replacement", "location", "etag"}


@contextmanager
def sync_path(monkeypatch):
    """The sync services on this database too: no async pool, so no async unit of work."""
    with monkeypatch.context() as m:
        m.setattr(Runtime, "aio", property(lambda self: None))
        yield


def _norm(value, key=None):
    if isinstance(value, dict):
        return {k: _norm(v, k) for k, v in value.items()}
    if isinstance(value, list):
        return [_norm(v) for v in value]
    if key in _VARYING and value is not None:
        return "<varies>"
    if isinstance(value, str) and _UUID.match(value):
        return "<uuid>"
    return value


def _events(rt, rid: str) -> list[tuple]:
    t = AuditEventSubjectRow.__table__
    out = []
    for e in audit_events(rt, request_id=rid):
        with rt.sessions() as s:
            subjects = len(s.execute(select(t.c.patient_id).where(t.c.event_id == e.id)).all())
        out.append((e.action, e.outcome, e.resource_type, e.outside_capture_scope, e.patient_id is not None,
                    e.resource_id is not None, _norm(e.detail), subjects))
    return out


def _answer(world, method_path: str, body: dict, who: str, key: str | None = None) -> tuple:
    rid = f"uow-{uuid.uuid4().hex}"
    extra = {"X-Request-ID": rid} | ({"Idempotency-Key": key} if key else {})
    r = world.client.post(method_path, json=body, headers=world.h(who, **extra))
    headers = {k: "<present>" for k in ("etag", "location", "idempotent-replayed") if k in r.headers}
    return r.status_code, _norm(r.json()), headers, _events(world.runtime, rid)


def _alike(world, monkeypatch, scenario):
    """`scenario()` -> a list of answers; the same through both paths."""
    fast = scenario()
    with sync_path(monkeypatch):
        slow = scenario()
    assert fast == slow
    return fast


def _register(world, who="clinic_a", **overrides):
    return _answer(world, "/api/v1/patients", new_child(**overrides), who)


# --- register ------------------------------------------------------------------------------------

@on_pg
def test_register_and_dose_never_touch_the_sync_services(world, monkeypatch):
    from registry.immunizations import service as doses
    from registry.patients import service as patients

    def sync_called(*_a, **_k):
        raise AssertionError("the sync service ran on PostgreSQL")

    monkeypatch.setattr(patients, "register", sync_called)
    monkeypatch.setattr(doses, "record", sync_called)
    child = world.register("clinic_a")
    r = world.client.post(f"/api/v1/patients/{child['id']}/immunizations", json=_bcg(child),
                          headers=world.h("clinic_a", **{"Idempotency-Key": uuid.uuid4().hex}))
    assert r.status_code == 201, r.json()


def test_a_registration_answers_and_audits_alike(world, monkeypatch):
    (status, body, headers, events), = _alike(world, monkeypatch, lambda: [_register(world)])
    assert status == 201 and headers == {"etag": "<present>", "location": "<present>"}
    assert events == [("patient.create", "success", "Patient", False, True, True, {"access_code_issued": True}, 0)]
    assert body["access_code"] == "<varies>" and body["version"] == 1


def test_registration_refusals_answer_and_audit_alike(world, monkeypatch):
    def scenario():
        first = new_child()
        world.client.post("/api/v1/patients", json=first, headers=world.h("clinic_a"))
        taken = world.client.post("/api/v1/patients", json=new_child(), headers=world.h("clinic_a")).json()["id"]
        return [
            _answer(world, "/api/v1/patients", new_child(bform=first["bform"]), "clinic_a"),  # the B-form is taken
            _answer(world, "/api/v1/patients", new_child(district="PK-XX-NOPE"), "clinic_a"),
            _answer(world, "/api/v1/patients", new_child(id=taken), "clinic_a"),
            _answer(world, "/api/v1/patients", new_child(birth_facility="F-NOT-A-FACILITY"), "clinic_a"),
            _answer(world, "/api/v1/patients", new_child(unnamed=True, given_name=None,
                                                         guardian={"name": "Amna", "relationship": "father"}), "clinic_a"),
            _answer(world, "/api/v1/patients", new_child(), "official_district"),  # no permission: refused at the gate
        ]
    answers = _alike(world, monkeypatch, scenario)
    assert [a[0] for a in answers] == [409, 422, 409, 422, 422, 403]
    assert [a[1].get("errors", [{}])[0].get("field") for a in answers[:5]] == \
        ["bform", "district", "id", "birth_facility", "guardian.relationship"]
    assert [len(a[3]) for a in answers] == [1] * 6  # every refusal audited once


def test_a_likely_duplicate_answers_and_audits_alike(world, monkeypatch):
    def scenario():
        first = world.register("clinic_a")
        twin = {**new_child(), "given_name": first["given_name"], "family_name": first["family_name"],
                "birth_date": first["birth_date"], "guardian": first["_input"]["guardian"], "phone": first["_input"]["phone"]}
        refused = _answer(world, "/api/v1/patients", twin, "clinic_b")
        confirmed = _answer(world, "/api/v1/patients", {**twin, "confirm_not_duplicate": True}, "clinic_b")
        return [refused, confirmed]
    (refused, confirmed) = _alike(world, monkeypatch, scenario)
    assert refused[0] == 409 and refused[1]["code"] == "likely_duplicate" and refused[1]["candidates"]
    assert refused[3][0][:2] == ("patient.create", "conflict") and refused[3][0][-1] == 1  # the candidate is its subject
    assert confirmed[0] == 201 and confirmed[3][0][6]["confirmed_not_duplicate"] is True


def test_idempotent_replays_answer_alike(world, monkeypatch):
    def scenario():
        key, body = uuid.uuid4().hex, new_child(id=str(uuid.uuid4()))
        first = world.client.post("/api/v1/patients", json=body, headers=world.h("clinic_a", **{"Idempotency-Key": key}))
        again = world.client.post("/api/v1/patients", json=body, headers=world.h("clinic_a", **{"Idempotency-Key": key}))
        assert again.content == first.content and again.headers["etag"] == first.headers["etag"]
        other = _answer(world, "/api/v1/patients", new_child(), "clinic_a", key=key)
        pid = first.json()["id"]
        dose_key = uuid.uuid4().hex
        d1 = world.client.post(f"/api/v1/patients/{pid}/immunizations", json=_bcg(first.json()),
                               headers=world.h("clinic_a", **{"Idempotency-Key": dose_key}))
        d2 = world.client.post(f"/api/v1/patients/{pid}/immunizations", json=_bcg(first.json()),
                               headers=world.h("clinic_a", **{"Idempotency-Key": dose_key}))
        assert d2.content == d1.content and d2.headers["idempotent-replayed"] == "true"
        return [(first.status_code, again.status_code, again.headers["idempotent-replayed"], d1.status_code),
                other[:2], _patients(world.runtime, pid), _doses(world.runtime, pid)]
    answers = _alike(world, monkeypatch, scenario)
    assert answers[0] == (201, 201, "true", 201) and answers[1][0] == 422 and answers[2:] == [1, 1]


# --- record a dose -------------------------------------------------------------------------------

def _bcg(child: dict, **overrides) -> dict:
    born = child["birth_date"]
    return {"vaccine": "BCG", "dose_number": 1, "date_given": born, **overrides}


def test_doses_answer_and_audit_alike(world, runtime, monkeypatch):
    today = local_today()

    def scenario():
        child = world.register("clinic_a", birth_date=(today - timedelta(days=20)).isoformat())
        other = world.register("clinic_c")  # another province: clinic_b reaches it by search scope
        merged, survivor = world.register("clinic_a"), world.register("clinic_a")
        with runtime.sessions.begin() as s:
            s.execute(update(Patient.__table__).where(Patient.__table__.c.id == uuid.UUID(merged["id"]))
                      .values(merged_into=uuid.UUID(survivor["id"])))
        path = f"/api/v1/patients/{child['id']}/immunizations"
        given = _answer(world, path, _bcg(child, id=str(uuid.uuid4())), "clinic_a")
        return [
            given,
            _answer(world, path, _bcg(child, dose_number=2), "clinic_a"),  # BCG has one dose: refused, impossible
            _answer(world, path, {"vaccine": "OPV", "dose_number": 1, "date_given": today.isoformat()}, "clinic_a"),
            _answer(world, path, {"vaccine": "PENTA", "dose_number": 1, "date_given": today.isoformat()}, "clinic_a"),
            _answer(world, path, {"vaccine": "PENTA", "dose_number": 1, "date_given": today.isoformat(),
                                  "override_reason": "campaign day, schedule waived"}, "clinic_a"),
            _answer(world, path, {"vaccine": "OPV", "date_given": today.isoformat(), "administered_here": False,
                                  "occurrence_text": "last week at the camp"}, "clinic_a"),  # reported, number inferred
            _answer(world, f"/api/v1/patients/{uuid.uuid4()}/immunizations", _bcg(child), "clinic_a"),  # unknown
            _answer(world, f"/api/v1/patients/{other['id']}/immunizations", _bcg(other), "clinic_b"),
            _answer(world, f"/api/v1/patients/{merged['id']}/immunizations", _bcg(merged), "clinic_a"),
            _answer(world, path, _bcg(child, id=_last_dose_id(runtime, child["id"])), "clinic_a"),  # the dose id exists
            _answer(world, path, {"vaccine": "OPV", "dose_number": 1, "date_given": today.isoformat(),
                                  "status": "not-done", "not_done_reason": "refusal"}, "clinic_a"),
        ]
    answers = _alike(world, monkeypatch, scenario)
    statuses = [a[0] for a in answers]
    assert statuses[0] == 201 and statuses[6] == 404 and statuses[8] == 409 and statuses[9] == 409
    assert answers[8][1]["reason"] == "merged"
    assert all(len(a[3]) == 1 for a in answers)  # one event each


def _last_dose_id(rt, pid: str) -> str:
    from registry.immunizations.models import Immunization

    t = Immunization.__table__
    with rt.sessions() as s:
        return str(s.execute(select(t.c.id).where(t.c.patient_id == uuid.UUID(pid)).order_by(t.c.recorded_at)).scalars().first())


def _patients(rt, pid: str) -> int:
    t = Patient.__table__
    with rt.sessions() as s:
        return len(s.execute(select(t.c.id).where(t.c.id == uuid.UUID(pid))).all())


def _doses(rt, pid: str) -> int:
    from registry.immunizations.models import Immunization

    t = Immunization.__table__
    with rt.sessions() as s:
        return len(s.execute(select(t.c.id).where(t.c.patient_id == uuid.UUID(pid))).all())


# --- a failure in the middle ---------------------------------------------------------------------

@pytest.mark.parametrize("keyed", [False, True])
def test_a_failure_after_the_writes_leaves_nothing_written(world, runtime, monkeypatch, keyed):
    """The service fails after its writes were sent (building the answer): 500, no patient, no
    success event (the failure's own event only), no access code, no stored response, the key free."""
    from registry.patients import codec

    def scenario():
        body, key, rid = new_child(id=str(uuid.uuid4())), uuid.uuid4().hex if keyed else None, f"uow-{uuid.uuid4().hex}"
        with monkeypatch.context() as m:
            def broken(*_a, **_k):
                raise RuntimeError("injected failure after the writes")
            m.setattr(codec, "to_view", broken)
            headers = world.h("clinic_a", **{"X-Request-ID": rid, **({"Idempotency-Key": key} if key else {})})
            r = world.client.post("/api/v1/patients", json=body, headers=headers)
        outcomes = [(e.action, e.outcome) for e in audit_events(runtime, request_id=rid)]
        with runtime.sessions() as s:
            keys = s.execute(select(IdempotencyKey.__table__.c.key_hash)).all()
        written = _patients(runtime, body["id"])
        retried = world.client.post("/api/v1/patients", json=body, headers=world.h("clinic_a", **(
            {"Idempotency-Key": key} if key else {}))).status_code
        return [r.status_code, outcomes, written, len(keys), retried, _patients(runtime, body["id"])]
    fast = scenario()
    with sync_path(monkeypatch):
        slow = scenario()
    for path, (status, outcomes, patients, _keys, retried, after) in (("loop", fast), ("sync", slow)):
        assert (path, status, outcomes, patients, retried, after) == (path, 500, [("patient.create", "error")], 0, 201, 1)


@on_pg
def test_a_dose_waits_for_a_merge_and_is_refused_as_merged(world, runtime):
    """The dose-vs-merge race on the event loop: the merge holds both records FOR UPDATE; the dose's
    FOR KEY SHARE waits for it, then sees `merged_into`: 409 `merged`, nothing written."""
    from test_linkage_dose_merge_race import _merge_open_then

    survivor, merged = world.register("clinic_a")["id"], world.register("clinic_a")["id"]
    worker = _merge_open_then(runtime, world, survivor, merged, lambda: world.client.post(
        f"/api/v1/patients/{merged}/immunizations", json={"vaccine": "BCG", "dose_number": 1, "date_given": "2026-06-02"},
        headers=world.h("clinic_a")), who=None)
    assert worker.error is None
    r = worker.result
    assert r.status_code == 409 and r.json()["reason"] == "merged" and r.json()["merged_into"] == survivor
    assert _doses(runtime, merged) == 0 and is_postgres(runtime)


def test_the_writes_query_text_is_parsed_once():
    """psycopg caches a query's parsing only up to MAX_CACHED_STATEMENT_PARAMS parameters; the
    async writes take more (registry/async_database.py raises the bound)."""
    import psycopg._queries

    import registry.async_database  # noqa: F401 - raises the bound on import
    from registry.immunizations.async_record import _write as dose_write
    from registry.patients.async_register import _write as register_write

    from registry.immunizations.repository import DOSES
    from registry.patients.repository import PATIENTS

    widest = max(len(register_write(tuple(PATIENTS.c.keys()), 4, 8, 4).defaults), len(dose_write(tuple(DOSES.c.keys()), 3).defaults))
    assert psycopg._queries.MAX_CACHED_STATEMENT_PARAMS >= widest > 50
