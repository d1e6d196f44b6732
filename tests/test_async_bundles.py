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
    from registry.immunizations import batch as dose_batch

    def scenario():
        child, ref, born = _child(world)
        body = _bundle(kind, _dose(ref, "BCG", 1, born), *([_dose(ref, "BCG", 2, born)] if kind == "batch" else []))
        key, rid = uuid.uuid4().hex, f"fb-{uuid.uuid4().hex}"
        keys = _keys(runtime)
        with monkeypatch.context() as m:
            def broken(*_a, **_k):
                raise RuntimeError("injected failure after the writes")
            m.setattr(dose_batch, "written", broken)
            r = world.client.post(URL, json=body, headers=world.h("clinic_a", **{"X-Request-ID": rid, "Idempotency-Key": key}))
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
def test_the_switch_and_a_patient_entry_send_the_bundle_to_the_sync_path(world, runtime, monkeypatch):
    """`NHR_FHIR_BUNDLE_ON_LOOP=false`, or a Bundle with a Patient entry: the sync path answers."""
    from test_fhir_api import _patient

    from registry.fhir import bundle

    called = []
    original = bundle.process

    def spy(*a, **k):
        called.append(True)
        return original(*a, **k)

    monkeypatch.setattr(bundle, "process", spy)
    _, ref, born = _child(world)
    r = world.client.post(URL, json={"resourceType": "Bundle", "type": "batch", "entry": [
        {"fullUrl": f"urn:uuid:{uuid.uuid4()}", "resource": _patient(), "request": {"method": "POST", "url": "Patient"}}]},
        headers=world.h("clinic_a"))
    assert r.status_code == 200 and called == [True]
    monkeypatch.setattr(runtime.settings.fhir, "bundle_on_loop", False)
    status, _body, _, _ = _post(world, _bundle("transaction", _dose(ref, "BCG", 1, born)), key=uuid.uuid4().hex)
    assert status == 200 and called == [True, True]
