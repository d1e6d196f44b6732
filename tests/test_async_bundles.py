"""FHIR transaction and batch Bundles of Immunizations on the async unit of work
(registry/fhir/bundle_async.py, issue 17) answer, write and audit exactly as the sync path
(registry/fhir/bundle.py) does: one behaviour, two drivers.

As tests/test_async_uploads.py: each scenario runs twice on the same database, through the route
as served (on PostgreSQL the event loop's transaction for a Bundle of Immunizations; on SQLite the
sync path in a worker thread) and with the async pool hidden (the sync path on PostgreSQL too);
the status, the response Bundle, the rows and the audit events must be the same. Values are
compared, never printed."""

from __future__ import annotations

import re
import uuid
from datetime import timedelta

import pytest
from conftest import PG_URL, audit_events
from sqlalchemy import func, select
from test_async_uploads import round_trips
from test_async_writes import _events, sync_path
from test_fhir_api import _dose

from registry.clock import local_today
from registry.immunizations.models import Immunization
from registry.sync.models import IdempotencyKey

on_pg = pytest.mark.skipif(not PG_URL, reason="the async unit of work exists on PostgreSQL only")
URL = "/fhir/R4"
_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
_VARYING = {"lastUpdated", "recorded"}


@pytest.fixture(autouse=True)
def _bundles_on_the_loop(runtime, monkeypatch):
    """The event loop's path is off by default (NHR_FHIR_BUNDLE_ON_LOOP, registry/settings.py): on here."""
    monkeypatch.setattr(runtime.settings.fhir, "bundle_on_loop", True)


def _norm(value, key=None):
    if isinstance(value, dict):
        return {k: _norm(v, k) for k, v in value.items()}
    if isinstance(value, list):
        return [_norm(v) for v in value]
    if key in _VARYING and value is not None:
        return "<varies>"
    if isinstance(value, str):
        return _UUID.sub("<uuid>", value)
    return value


def _entry(resource: dict) -> dict:
    return {"fullUrl": f"urn:uuid:{uuid.uuid4()}", "resource": resource, "request": {"method": "POST", "url": "Immunization"}}


def _bundle(kind: str, *resources) -> dict:
    return {"resourceType": "Bundle", "type": kind, "entry": [_entry(r) for r in resources]}


def _post(world, body: dict, who: str = "clinic_a", key: str | None = None) -> tuple:
    rid = f"fb-{uuid.uuid4().hex}"
    extra = {"X-Request-ID": rid} | ({"Idempotency-Key": key} if key else {})
    r = world.client.post(URL, json=body, headers=world.h(who, **extra))
    headers = {k: "<present>" for k in ("etag", "location", "idempotent-replayed") if k in r.headers}
    return r.status_code, _norm(r.json()), headers, sorted(_events(world.runtime, rid), key=repr)


def _doses(rt, pid) -> int:
    with rt.sessions() as s:
        return s.execute(select(func.count()).select_from(Immunization).where(
            Immunization.patient_id == uuid.UUID(str(pid)))).scalar_one()


def _keys(rt) -> int:
    with rt.sessions() as s:
        return s.execute(select(func.count()).select_from(IdempotencyKey)).scalar_one()


def _alike(monkeypatch, scenario):
    fast = scenario()
    with sync_path(monkeypatch):
        slow = scenario()
    assert fast == slow
    return fast


def _child(world, who="clinic_a"):
    child = world.register(who, birth_date=(local_today() - timedelta(days=20)).isoformat())
    return child, f"Patient/{child['id']}", child["birth_date"]


@on_pg
def test_a_bundle_of_immunizations_never_touches_the_sync_bundle(world, monkeypatch):
    from registry.fhir import bundle

    def sync_called(*_a, **_k):
        raise AssertionError("the sync Bundle ran on PostgreSQL")

    monkeypatch.setattr(bundle, "process", sync_called)
    _, ref, born = _child(world)
    for kind in ("transaction", "batch"):
        status, body, _, _ = _post(world, _bundle(kind, _dose(ref, "BCG", 1, born) if kind == "transaction" else
                                                  _dose(ref, "OPV", 0, born)), key=uuid.uuid4().hex)
        assert status == 200 and body["entry"][0]["response"]["status"] == "201 Created"


def test_transactions_answer_write_and_audit_alike(world, runtime, monkeypatch):
    today = local_today().isoformat()

    def scenario():
        child, ref, born = _child(world)
        refused = _post(world, _bundle("transaction", _dose(ref, "BCG", 1, born), _dose(ref, "BCG", 2, born),
                                       _dose(ref, "PENTA", 1, today)))  # the second: BCG has one dose
        malformed = _post(world, _bundle("transaction", _dose(ref, "BCG", 1, born), _dose(ref, "NOPE", 1, born)))
        ok = _post(world, _bundle("transaction", _dose(ref, "BCG", 1, born), _dose(ref, "OPV", 0, born)))
        urn = _post(world, _bundle("transaction", _dose(f"urn:uuid:{uuid.uuid4()}", "PENTA", 1, born)))
        unknown = _post(world, _bundle("transaction", _dose(f"Patient/{uuid.uuid4()}", "BCG", 1, born)))
        taken = _post(world, _bundle("transaction", _dose(ref, "OPV", 0, born)))  # on record already
        return [ok, refused, malformed, urn, unknown, taken, _doses(runtime, child["id"])]
    ok, refused, malformed, urn, unknown, taken, rows = _alike(monkeypatch, scenario)
    assert ok[0] == 200 and [e["response"]["status"] for e in ok[1]["entry"]] == ["201 Created"] * 2
    assert all(e["response"]["location"].endswith("/_history/1") and e["response"]["etag"] == 'W/"1"' for e in ok[1]["entry"])
    assert [e[:2] for e in ok[3]] == [("immunization.create", "success")] * 2
    assert refused[0] == 422 and refused[1]["issue"][0]["expression"][0].startswith("Bundle.entry[1].resource")
    assert [e[:2] for e in refused[3]] == [("immunization.create", "invalid")]
    assert malformed[0] == 422 and malformed[1]["issue"][0]["expression"][0].startswith("Bundle.entry[1]")
    assert urn[0] in (400, 422) and unknown[0] >= 400 and taken[0] >= 400
    assert rows == 2


def test_batches_answer_write_and_audit_alike(world, runtime, monkeypatch):
    today = local_today().isoformat()

    def scenario():
        child, ref, born = _child(world)
        visiting, vref, vborn = _child(world, "clinic_c")  # another province: reached by search scope, flagged
        reported = {**_dose(ref, "OPV", 0, born), "primarySource": False}
        body = _bundle("batch", _dose(ref, "BCG", 1, born), _dose(ref, "BCG", 2, born), _dose(ref, "NOPE", 1, born),
                       _dose(ref, "PENTA", 1, today), _dose(f"Patient/{uuid.uuid4()}", "BCG", 1, born),
                       _dose(f"urn:uuid:{uuid.uuid4()}", "BCG", 1, born), _dose(vref, "BCG", 1, vborn), reported)
        first = _post(world, body)
        only_refused = _post(world, _bundle("batch", _dose(ref, "BCG", 2, born), _dose(ref, "NOPE", 1, born)))
        return [first, only_refused, _doses(runtime, child["id"]), _doses(runtime, visiting["id"])]
    first, only_refused, rows, visiting_rows = _alike(monkeypatch, scenario)
    assert first[0] == 200 and first[1]["type"] == "batch-response"
    statuses = [e["response"]["status"].split()[0] for e in first[1]["entry"]]
    assert statuses[0] == "201" and statuses[6] == "201" and statuses[1] != "201" and statuses[2] == "422"
    assert all("outcome" in e["response"] for e, s in zip(first[1]["entry"], statuses) if s != "201")
    assert only_refused[0] == 200 and len(only_refused[3]) == 2
    assert rows == statuses[:4].count("201") + (statuses[7] == "201") and visiting_rows == 1


def test_idempotent_replays_answer_alike(world, runtime, monkeypatch):
    def scenario():
        child, ref, born = _child(world)
        key, body = uuid.uuid4().hex, _bundle("transaction", _dose(ref, "BCG", 1, born))
        h = world.h("clinic_a", **{"Idempotency-Key": key})
        a = world.client.post(URL, json=body, headers=h)
        b = world.client.post(URL, json=body, headers=h)
        assert b.content == a.content and b.headers["idempotent-replayed"] == "true"
        other = world.client.post(URL, json=_bundle("transaction", _dose(ref, "OPV", 0, born)), headers=h)
        return [a.status_code, b.status_code, other.status_code, _doses(runtime, child["id"])]
    assert _alike(monkeypatch, scenario) == [200, 200, 422, 1]


@pytest.mark.parametrize("kind", ["transaction", "batch"])
def test_a_failure_after_the_writes_leaves_nothing_written(world, runtime, monkeypatch, kind):
    """The Bundle fails after its writes were sent: 500, no dose, no stored response, the key free,
    the refusal on record (written again after the rollback); the retry runs."""
    def scenario():
        child, ref, born = _child(world)
        body = _bundle(kind, _dose(ref, "BCG", 1, born), *([_dose(ref, "BCG", 2, born)] if kind == "batch" else []))
        key, rid = uuid.uuid4().hex, f"fb-{uuid.uuid4().hex}"
        keys = _keys(runtime)
        r = _post_failing_after_writes(world, monkeypatch, body, rid, key)
        outcomes = sorted((e.action, e.outcome) for e in audit_events(runtime, request_id=rid))
        written = (_doses(runtime, child["id"]), _keys(runtime) - keys)
        retried = world.client.post(URL, json=body, headers=world.h("clinic_a", **{"Idempotency-Key": key}))
        return [r.status_code, outcomes, written, retried.status_code, _doses(runtime, child["id"])]
    status, outcomes, written, retried, after = _alike(monkeypatch, scenario)
    assert (status, written, retried, after) == (500, (0, 0), 200, 1)
    assert outcomes == ([("patient.create", "error")] if kind == "transaction" else [("immunization.create", "invalid")])


@on_pg
def test_a_bundle_of_immunizations_takes_five_round_trips(world, runtime, monkeypatch):
    """On the event loop: the key's claim, BEGIN with the locks and every read, the one write, the
    stored response, COMMIT. The sync path (the same Bundle, the async pool hidden) takes more."""
    from registry.sync import idempotency, idempotency_async

    for module in (idempotency, idempotency_async):  # no random purge of expired keys in the count
        monkeypatch.setattr(module, "PURGE_ONE_IN", 1 << 62)

    def post(n: int) -> int:
        children = [_child(world) for _ in range(n)]
        world.client.post(URL, json=_bundle("batch", *[_dose(ref, "BCG", 1, born) for _, ref, born in children]),
                          headers=world.h("clinic_a", **{"Idempotency-Key": uuid.uuid4().hex}))  # warm: the schedule
        body = _bundle("transaction", *[_dose(ref, "OPV", 0, born) for _, ref, born in children])
        with round_trips(monkeypatch) as box:
            r = world.client.post(URL, json=body, headers=world.h("clinic_a", **{"Idempotency-Key": uuid.uuid4().hex}))
        assert r.status_code == 200 and len(r.json()["entry"]) == n
        return box[0]
    loop = [post(1), post(12)]
    with sync_path(monkeypatch):
        sync = [post(1), post(12)]
    assert loop == [5, 5], loop
    assert all(s >= 10 for s in sync), sync  # 10 and 10 when written


@on_pg
def test_the_switch_and_a_conditional_create_send_the_bundle_to_the_sync_path(world, runtime, monkeypatch):
    """`NHR_FHIR_BUNDLE_ON_LOOP=false`, or a Bundle with a conditional create (it searches first):
    the sync path answers."""
    from test_fhir_api import _patient

    from registry.fhir import bundle, codes

    called = []
    original = bundle.process

    def spy(*a, **k):
        called.append(True)
        return original(*a, **k)

    monkeypatch.setattr(bundle, "process", spy)
    _, ref, born = _child(world)
    r = world.client.post(URL, json={"resourceType": "Bundle", "type": "batch", "entry": [
        {"fullUrl": f"urn:uuid:{uuid.uuid4()}", "resource": _patient(), "request": {
            "method": "POST", "url": "Patient", "ifNoneExist": f"identifier={codes.SID_BFORM}|{uuid.uuid4().int % 10**13:013d}"}}]},
        headers=world.h("clinic_a"))
    assert r.status_code == 200 and called == [True]
    monkeypatch.setattr(runtime.settings.fhir, "bundle_on_loop", False)
    status, _body, _, _ = _post(world, _bundle("transaction", _dose(ref, "BCG", 1, born)), key=uuid.uuid4().hex)
    assert status == 200 and called == [True, True]


# ---------------------------------------------------------------- Bundles with Patient entries

def _pentry(resource: dict, full_url: str | None = None) -> dict:
    return {"fullUrl": full_url or f"urn:uuid:{uuid.uuid4()}", "resource": resource,
            "request": {"method": "POST", "url": resource["resourceType"]}}


def _with_patients(kind: str, *entries) -> dict:
    return {"resourceType": "Bundle", "type": kind, "entry": list(entries)}


def _shaped(answer: tuple) -> tuple:
    """A new Patient's content (names, identifiers, the access code) differs from run to run: its
    shape (the keys, the extensions' urls) and its version are compared, the rest as is."""
    status, body, headers, events = answer
    for entry in body.get("entry", ()) if isinstance(body, dict) else ():
        res = entry.get("resource")
        if isinstance(res, dict) and res.get("resourceType") == "Patient":
            entry["resource"] = {"keys": sorted(res), "extensions": [x["url"] for x in res.get("extension", ())],
                                 "version": res["meta"]["versionId"]}
    return status, body, headers, events


def _counts(rt) -> tuple:
    from registry.citizens.repository import CODES
    from registry.linkage.repository import CANDIDATES
    from registry.patients.repository import PATIENTS

    with rt.sessions() as s:
        return tuple(s.execute(select(func.count()).select_from(t)).scalar_one()
                     for t in (PATIENTS, Immunization.__table__, CODES, CANDIDATES))


def _delta(rt, before: tuple) -> tuple:
    return tuple(b - a for a, b in zip(before, _counts(rt)))


def _twins() -> tuple[dict, dict]:
    """The same child twice (test_async_uploads' `_alike_child`): another spelling, day and month
    swapped, no identifier or phone shared."""
    from test_fhir_api import _patient

    given = "Zarnigar" + uuid.uuid4().hex[:6]
    first = _patient(birthDate="2026-06-01")
    first["name"][0]["given"] = [given]
    again = {k: v for k, v in first.items() if k not in ("identifier", "telecom")}
    again = {**again, "birthDate": "2026-01-06",
             "name": [{**first["name"][0], "given": [given.replace("Zarnigar", "Zarnighar")]}]}
    return first, again


def test_a_transaction_of_patients_and_their_doses_answers_writes_and_audits_alike(world, runtime, monkeypatch):
    """Patients with doses referencing them by urn:uuid (and a known child's by Patient/id); then
    a transaction whose dose references no entry (nothing written) and one with a child twice."""
    from test_fhir_api import _patient

    def scenario():
        _, ref, born = _child(world)
        before = _counts(runtime)
        u1, u2 = f"urn:uuid:{uuid.uuid4()}", f"urn:uuid:{uuid.uuid4()}"
        ok = _post(world, _with_patients("transaction", _pentry(_dose(u1, "BCG", 1, "2026-06-02")), _pentry(_patient(), u1),
                                         _pentry(_dose(u2, "OPV", 0, "2026-06-02")), _pentry(_patient(), u2),
                                         _pentry(_dose(ref, "BCG", 1, born)), _pentry(_dose(u1, "OPV", 0, "2026-06-02"))))
        written = _delta(runtime, before)
        before = _counts(runtime)
        dangling = _post(world, _with_patients("transaction", _pentry(_patient(), u1),
                                               _pentry(_dose(f"urn:uuid:{uuid.uuid4()}", "BCG", 1, "2026-06-02"))))
        first, again = _twins()
        twice = _post(world, _with_patients("transaction", _pentry(first), _pentry(again)))
        malformed = _post(world, _with_patients("transaction", _pentry(_patient()), _pentry(_patient(gender="robot"))))
        return [_shaped(ok), written, _shaped(dangling), _shaped(twice), _shaped(malformed), _delta(runtime, before)]
    ok, written, dangling, twice, malformed, nothing = _alike(monkeypatch, scenario)
    assert ok[0] == 200 and [e["response"]["status"] for e in ok[1]["entry"]] == ["201 Created"] * 6
    assert ok[1]["entry"][1]["resource"]["extensions"] and ok[1]["entry"][1]["response"]["location"].startswith("Patient/")
    assert sorted(e[:2] for e in ok[3]) == [("immunization.create", "success")] * 4 + [("patient.create", "success")] * 2
    assert written[:3] == (2, 4, 2)
    assert dangling[0] in (400, 422) and dangling[1]["issue"][0]["expression"][0].startswith("Bundle.entry[1].resource")
    assert twice[0] == 409 and twice[1]["issue"][0]["expression"][0].startswith("Bundle.entry[1]")
    assert malformed[0] in (400, 422) and malformed[1]["issue"][0]["expression"][0].startswith("Bundle.entry[1].resource")
    assert nothing[:3] == (0, 0, 0)


def test_a_batch_of_patients_and_their_doses_answers_writes_and_audits_alike(world, runtime, monkeypatch):
    """A batch: a malformed Patient and a taken B-form (refused, each with its event), a dose
    referencing each (does not resolve), a child twice (likely duplicate in file), accepted
    patients with their doses."""
    from test_fhir_api import _patient

    from registry.fhir import codes

    def scenario():
        known = world.register("clinic_a")
        before = _counts(runtime)
        bad, taken, good = (f"urn:uuid:{uuid.uuid4()}" for _ in range(3))
        first, again = _twins()
        body = _with_patients(
            "batch", _pentry(_dose(bad, "BCG", 1, "2026-06-02")), _pentry(_patient(gender="robot"), bad),
            _pentry(_patient(identifier=[{"system": codes.SID_BFORM, "value": known["_input"]["bform"]}]), taken),
            _pentry(_dose(taken, "BCG", 1, "2026-06-02")), _pentry(first, good), _pentry(again),
            _pentry(_dose(good, "BCG", 1, "2026-06-02")), _pentry(_dose(good, "BCG", 2, "2026-06-02")),
            _pentry(_dose(f"Patient/{known['id']}", "BCG", 1, known["birth_date"])))
        answer = _post(world, body, key=uuid.uuid4().hex)
        return [_shaped(answer), _delta(runtime, before)]
    answer, written = _alike(monkeypatch, scenario)
    statuses = [e["response"]["status"].split()[0] for e in answer[1]["entry"]]
    assert answer[0] == 200 and answer[1]["type"] == "batch-response"
    assert statuses[4] == statuses[6] == statuses[8] == "201" and statuses[2] == statuses[5] == "409"
    assert statuses[0] in ("400", "422") and statuses[1] in ("400", "422") and statuses[3] in ("400", "422")
    in_file = answer[1]["entry"][5]["response"]["outcome"]["issue"][0]
    assert in_file["expression"][0].startswith("Bundle.entry[5]") and "in_file" in repr(in_file)
    outcomes = sorted(e[:2] for e in answer[3])
    assert outcomes.count(("patient.create", "conflict")) == 2 and outcomes.count(("patient.create", "success")) == 1
    assert written[:3] == (1, 2, 1)


@pytest.mark.parametrize("kind", ["transaction", "batch"])
def test_a_failure_after_writing_patients_leaves_nothing_written(world, runtime, monkeypatch, kind):
    """Patients and their doses, failing after the writes were sent: 500, no patient, no dose,
    no access code, the key free; the retry runs."""
    from test_fhir_api import _patient

    def scenario():
        u = f"urn:uuid:{uuid.uuid4()}"
        body = _with_patients(kind, _pentry(_patient(), u), _pentry(_dose(u, "BCG", 1, "2026-06-02")))
        key, rid = uuid.uuid4().hex, f"fb-{uuid.uuid4().hex}"
        keys, before = _keys(runtime), _counts(runtime)
        r = _post_failing_after_writes(world, monkeypatch, body, rid, key)
        outcomes = sorted((e.action, e.outcome) for e in audit_events(runtime, request_id=rid))
        written = (_delta(runtime, before), _keys(runtime) - keys)
        retried = world.client.post(URL, json=body, headers=world.h("clinic_a", **{"Idempotency-Key": key}))
        return [r.status_code, outcomes, written, retried.status_code, _delta(runtime, before)[:3]]
    status, _outcomes, written, retried, after = _alike(monkeypatch, scenario)
    assert (status, written, retried, after) == (500, ((0, 0, 0, 0), 0), 200, (1, 1, 1))


@on_pg
def test_a_bundle_of_patients_and_doses_takes_five_round_trips(world, runtime, monkeypatch):
    """On the event loop, with Patient entries too: the key's claim, BEGIN with the locks and every
    read, the one write, the stored response, COMMIT (the sync path: many more)."""
    from test_fhir_api import _patient

    from registry.sync import idempotency, idempotency_async

    for module in (idempotency, idempotency_async):
        monkeypatch.setattr(module, "PURGE_ONE_IN", 1 << 62)

    def post(n: int) -> int:
        urns = [f"urn:uuid:{uuid.uuid4()}" for _ in range(n)]
        entries = [x for u in urns for x in (_pentry(_patient(), u), _pentry(_dose(u, "BCG", 1, "2026-06-02")))]
        warm = [_pentry(_patient())]  # the schedule, the linkage model, the jurisdictions
        world.client.post(URL, json=_with_patients("batch", *warm), headers=world.h("clinic_a"))
        with round_trips(monkeypatch) as box:
            r = world.client.post(URL, json=_with_patients("transaction", *entries),
                                  headers=world.h("clinic_a", **{"Idempotency-Key": uuid.uuid4().hex}))
        assert r.status_code == 200 and len(r.json()["entry"]) == 2 * n
        return box[0]
    loop = [post(1), post(5)]
    with sync_path(monkeypatch):
        sync = [post(1), post(5)]
    assert loop == [5, 5], loop
    assert all(s > 5 for s in sync), sync


def test_an_idempotent_replay_of_patients_answers_alike(world, runtime, monkeypatch):
    """The key's stored response (with the new Patient's access code) is replayed byte for byte;
    nothing is written again; the same key with another Bundle is refused."""
    from test_fhir_api import _patient

    def scenario():
        u = f"urn:uuid:{uuid.uuid4()}"
        key, before = uuid.uuid4().hex, _counts(runtime)
        body = _with_patients("transaction", _pentry(_patient(), u), _pentry(_dose(u, "BCG", 1, "2026-06-02")))
        h = world.h("clinic_a", **{"Idempotency-Key": key})
        a = world.client.post(URL, json=body, headers=h)
        b = world.client.post(URL, json=body, headers=h)
        assert b.content == a.content and b.headers["idempotent-replayed"] == "true"
        other = world.client.post(URL, json=_with_patients("transaction", _pentry(_patient())), headers=h)
        return [a.status_code, b.status_code, other.status_code, _delta(runtime, before)[:3]]
    assert _alike(monkeypatch, scenario) == [200, 200, 422, (1, 1, 1)]


def _post_failing_after_writes(world, monkeypatch, body: dict, rid: str, key: str):
    """POST the Bundle with a failure injected once its rows are written (`dose_batch.written`)."""
    from registry.immunizations import batch as dose_batch

    with monkeypatch.context() as m:
        def broken(*_a, **_k):
            raise RuntimeError("injected failure after the writes")
        m.setattr(dose_batch, "written", broken)
        return world.client.post(URL, json=body, headers=world.h("clinic_a", **{"X-Request-ID": rid, "Idempotency-Key": key}))
