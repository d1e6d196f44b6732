"""The batch upload of doses on the async unit of work (registry/sync/batch_async.py, issue 17)
answers, writes and audits exactly as the sync batch service does: one behaviour, two drivers.

As tests/test_async_writes.py: each scenario runs twice on the same database, through the route
as served (on PostgreSQL the event loop's transaction for a batch of doses; on SQLite the sync
service in a worker thread) and with the async pool hidden (the sync service on PostgreSQL too);
the results, the rows and the audit events must be the same. Values are compared, never printed."""

from __future__ import annotations

import threading
import uuid
from contextlib import contextmanager
from datetime import timedelta

import pytest
from conftest import PG_URL, audit_events
from sqlalchemy import func, select, text, update
from test_async_writes import _events, _norm, sync_path

from registry.clock import local_today
from registry.immunizations.models import Immunization
from registry.patients.models import Patient
from registry.sync.models import IdempotencyKey, SyncReceipt

on_pg = pytest.mark.skipif(not PG_URL, reason="the async unit of work exists on PostgreSQL only")
URL = "/api/v1/sync/batch"


def _post(world, items: list, who: str = "clinic_a", key: str | None = None) -> tuple:
    rid = f"up-{uuid.uuid4().hex}"
    extra = {"X-Request-ID": rid} | ({"Idempotency-Key": key} if key else {})
    r = world.client.post(URL, json={"items": items}, headers=world.h(who, **extra))
    return r.status_code, _norm(r.json()), sorted(_events(world.runtime, rid), key=repr)


def _count(rt, table, column, ids) -> int:
    with rt.sessions() as s:
        return s.execute(select(func.count()).select_from(table).where(
            table.c[column].in_([uuid.UUID(str(i)) for i in ids]))).scalar_one()


def _dose(born: str, **kw) -> dict:
    return {"id": str(uuid.uuid4()), "vaccine": "BCG", "dose_number": 1, "date_given": born, **kw}


def _item(pid, data) -> dict:
    return {"op": "dose.record", "patient_id": str(pid), "data": data}


def _alike(monkeypatch, scenario):
    fast = scenario()
    with sync_path(monkeypatch):
        slow = scenario()
    assert fast == slow
    return fast


@on_pg
def test_a_batch_of_doses_never_touches_the_sync_batch(world, monkeypatch):
    from registry.sync import batch

    def sync_called(*_a, **_k):
        raise AssertionError("the sync batch ran on PostgreSQL")

    monkeypatch.setattr(batch, "upload", sync_called)
    child = world.register("clinic_a")
    status, body, _ = _post(world, [_item(child["id"], _dose(child["birth_date"]))], key=uuid.uuid4().hex)
    assert status == 200 and body["created"] == 1


def test_a_batch_of_doses_answers_writes_and_audits_alike(world, runtime, monkeypatch):
    today = local_today()

    def scenario():
        child = world.register("clinic_a", birth_date=(today - timedelta(days=20)).isoformat())
        visiting = world.register("clinic_c")  # another province: reached by search scope, flagged
        merged, survivor = world.register("clinic_a"), world.register("clinic_a")
        with runtime.sessions.begin() as s:
            s.execute(update(Patient.__table__).where(Patient.__table__.c.id == uuid.UUID(merged["id"]))
                      .values(merged_into=uuid.UUID(survivor["id"])))
        on_record = world.client.post(f"/api/v1/patients/{child['id']}/immunizations",
                                      json={"vaccine": "OPV", "dose_number": 0, "date_given": child["birth_date"]},
                                      headers=world.h("clinic_a")).json()["id"]
        born, now = child["birth_date"], today.isoformat()
        items = [
            _item(child["id"], _dose(born)),
            _item(child["id"], _dose(born, dose_number=2)),  # BCG has one dose: refused
            _item(child["id"], _dose(born, vaccine="NOPE")),  # malformed: rejected, no event
            _item(child["id"], {"vaccine": "PENTA", "dose_number": 1, "date_given": now}),  # no id: malformed
            _item(child["id"], _dose(now, vaccine="PENTA")),  # too early: refused
            _item(child["id"], _dose(now, vaccine="PENTA", override_reason="campaign day, schedule waived")),
            _item(child["id"], {"id": str(uuid.uuid4()), "vaccine": "OPV", "provenance": "reported",
                                "occurrence_text": "last week at the camp"}),  # reported, number inferred
            _item(uuid.uuid4(), _dose(born)),  # unknown patient
            _item(visiting["id"], _dose(visiting["birth_date"])),
            _item(merged["id"], _dose(merged["birth_date"])),
            _item(child["id"], _dose(born, vaccine="OPV", dose_number=0, id=on_record)),  # the id exists
            _item(child["id"], _dose(now, vaccine="OPV", dose_number=1, status="not-done", not_done_reason="refusal-child-sick")),
        ]
        first = _post(world, items)
        again = _post(world, items)  # a full resend: duplicates
        changed = _post(world, [{**items[0], "data": {**items[0]["data"], "date_given": now}}])  # same id, other content
        ids = [i["data"]["id"] for i in items if "id" in i["data"]]
        rows = (_count(runtime, Immunization.__table__, "id", ids), _count(runtime, SyncReceipt.__table__, "record_id", ids))
        listed = world.client.get(f"/api/v1/patients/{child['id']}/immunizations", headers=world.h("clinic_a")).json()
        numbers = sorted((d["vaccine"], d["dose_number"], d["status"]) for d in listed)
        return [first, again, changed, rows, numbers]
    first, again, changed, rows, numbers = _alike(monkeypatch, scenario)
    assert ("OPV", 0, "completed") in numbers and ("BCG", 1, "completed") in numbers
    assert first[0] == 200, first[1]
    assert [r["result"] for r in first[1]["results"]] == ["created", "rejected", "rejected", "rejected", "rejected", "created",
                                                          "created", "rejected", "created", "rejected", "rejected", "created"]
    assert first[1]["results"][9]["reason"] == "conflict" and first[1]["results"][9]["code"] == "merged"
    actions = [e[:2] for e in first[2]]
    assert actions.count(("immunization.create", "success")) == 5 and actions.count(("sync.batch", "success")) == 1
    assert len(first[2]) == 5 + 5 + 1  # one per applied or refused item (not the malformed), one for the batch
    assert [r["result"] for r in again[1]["results"]].count("duplicate") == 5
    assert changed[1]["results"][0]["reason"] == "conflict" and changed[2][0][:2] == ("immunization.create", "conflict")
    assert rows == (6, 5)


def _key_rows(rt) -> int:
    with rt.sessions() as s:
        return s.execute(select(func.count()).select_from(IdempotencyKey)).scalar_one()


def test_idempotent_replays_answer_alike(world, runtime, monkeypatch):
    def scenario():
        child = world.register("clinic_a")
        key, items = uuid.uuid4().hex, [_item(child["id"], _dose(child["birth_date"]))]
        h = world.h("clinic_a", **{"Idempotency-Key": key})
        a = world.client.post(URL, json={"items": items}, headers=h)
        b = world.client.post(URL, json={"items": items}, headers=h)
        assert b.content == a.content and b.headers["idempotent-replayed"] == "true"
        other = world.client.post(URL, json={"items": [_item(child["id"], _dose(child["birth_date"]))]}, headers=h)
        return [a.status_code, b.status_code, other.status_code, _count(runtime, Immunization.__table__, "patient_id",
                                                                          [child["id"]])]
    assert _alike(monkeypatch, scenario) == [200, 200, 422, 1]


@pytest.mark.parametrize("keyed", [False, True])
def test_a_failure_after_the_writes_leaves_nothing_written(world, runtime, monkeypatch, keyed):
    """The upload fails after its writes were sent: 500, no dose, no receipt, no success event
    (the refusal only), no stored response, the key free; the retry runs."""
    from registry.immunizations import batch as dose_batch

    def scenario():
        child = world.register("clinic_a")
        items = [_item(child["id"], _dose(child["birth_date"])), _item(child["id"], _dose(child["birth_date"], dose_number=2))]
        key, rid = uuid.uuid4().hex if keyed else None, f"up-{uuid.uuid4().hex}"
        keys = _key_rows(runtime)
        with monkeypatch.context() as m:
            def broken(*_a, **_k):
                raise RuntimeError("injected failure after the writes")
            m.setattr(dose_batch, "written", broken)
            headers = world.h("clinic_a", **{"X-Request-ID": rid, **({"Idempotency-Key": key} if key else {})})
            r = world.client.post(URL, json={"items": items}, headers=headers)
        outcomes = sorted((e.action, e.outcome) for e in audit_events(runtime, request_id=rid))
        ids = [i["data"]["id"] for i in items]
        written = (_count(runtime, Immunization.__table__, "id", ids), _count(runtime, SyncReceipt.__table__, "record_id", ids),
                   _key_rows(runtime) - keys)
        retried = world.client.post(URL, json={"items": items}, headers=world.h("clinic_a", **(
            {"Idempotency-Key": key} if key else {})))
        return [r.status_code, outcomes, written, retried.status_code, retried.json()["created"]]
    # the refusal stays on record (written again after the rollback), nothing else
    assert _alike(monkeypatch, scenario) == [500, [("immunization.create", "invalid")], (0, 0, 0), 200, 1]


@on_pg
def test_a_concurrent_writer_of_the_same_id_gives_the_same_answer(world, runtime, monkeypatch):
    """Another transaction commits a dose with one of the batch's ids between the snapshot and the
    write: the sync path falls back to the single route for the run, the event loop's path judges
    the batch again; both answer `rejected: conflict` for that item and write the others."""
    from registry.immunizations import batch as dose_batch

    judge = dose_batch.judge

    def scenario():
        child = world.register("clinic_a")
        src = _opv0(world, child)
        items = [_item(child["id"], _dose(child["birth_date"])),
                 _item(child["id"], _dose(child["birth_date"], vaccine="OPV", dose_number=1, date_given=local_today().isoformat(),
                                          override_reason="campaign day, schedule waived"))]
        raced = {"done": False}

        def racing(*a, **k):
            if not raced["done"]:
                raced["done"] = True
                with runtime.sessions.begin() as s:  # another writer, committed
                    s.execute(text("INSERT INTO immunizations SELECT (jsonb_populate_record(i, jsonb_build_object('id', "
                                   "CAST(:new AS text)))).* FROM immunizations i WHERE i.id = :src"),
                              {"new": items[0]["data"]["id"], "src": uuid.UUID(src)})
            return judge(*a, **k)
        with monkeypatch.context() as m:
            m.setattr(dose_batch, "judge", racing)
            answer = _post(world, items)
        return [answer, _count(runtime, Immunization.__table__, "patient_id", [child["id"]])]
    (status, body, events), doses = _alike(monkeypatch, scenario)
    assert status == 200 and [(r["result"], r.get("reason")) for r in body["results"]] == [("rejected", "conflict"),
                                                                                            ("created", None)]
    assert doses == 3 and sorted(e[:2] for e in events) == [("immunization.create", "conflict"),
                                                            ("immunization.create", "success"), ("sync.batch", "success")]


def test_a_duplicate_key_while_the_first_runs_is_409(world, runtime, monkeypatch):
    import anyio

    from registry.sync import batch_async

    entered, go = threading.Event(), threading.Event()
    original = batch_async.upload_async

    async def slow(ctx, items):
        entered.set()
        await anyio.to_thread.run_sync(go.wait, 10)
        return await original(ctx, items)

    monkeypatch.setattr(batch_async, "upload_async", slow)
    child = world.register("clinic_a")
    items, results = [_item(child["id"], _dose(child["birth_date"]))], {}
    headers = world.h("clinic_a", **{"Idempotency-Key": uuid.uuid4().hex})
    t = threading.Thread(target=lambda: results.setdefault("first", world.client.post(URL, json={"items": items}, headers=headers)))
    t.start()
    try:
        assert entered.wait(10)
        second = world.client.post(URL, json={"items": items}, headers=headers)
        assert second.status_code == 409 and second.json()["errors"][0]["field"] == "Idempotency-Key"
    finally:
        go.set()
        t.join(20)
    assert results["first"].status_code == 200
    third = world.client.post(URL, json={"items": items}, headers=headers)
    assert third.status_code == 200 and third.headers["idempotent-replayed"] == "true" and third.content == results["first"].content


def _at_the_gate() -> bool:
    """The gate's own reads (rate limit, token generation): the same on both paths, not every time."""
    import traceback

    return any(f.name in ("check", "_hit_sync", "load", "_load_once") and ("rate_limit" in f.filename or "revocation" in f.filename)
               for f in traceback.extract_stack())


@contextmanager
def round_trips(monkeypatch):
    """Counts the waits for the server's answer on every psycopg connection of this process (a
    pipeline's, or one statement's, or a multi-statement message's: one each), but the gate's."""
    import psycopg
    from psycopg.waiting import Wait

    box = [0]

    def counted(gen):
        read, value = False, None
        try:
            w = gen.send(None)
            while True:
                read = read or w in (Wait.R, Wait.RW)
                value = yield w
                w = gen.send(value)
        except StopIteration as stop:
            box[0] += read and not _at_the_gate()
            return stop.value

    sync_wait, async_wait = psycopg.Connection.wait, psycopg.AsyncConnection.wait
    with monkeypatch.context() as m:
        m.setattr(psycopg.Connection, "wait", lambda self, gen, *a, **k: sync_wait(self, counted(gen), *a, **k))
        m.setattr(psycopg.AsyncConnection, "wait", lambda self, gen, *a, **k: async_wait(self, counted(gen), *a, **k))
        yield box


@on_pg
def test_a_batch_of_doses_takes_five_round_trips(world, runtime, monkeypatch):
    """On the event loop: the key's claim, BEGIN with the locks and every read, the one write, the
    stored response, COMMIT. The sync path (the same batch, the async pool hidden) takes more."""
    from registry.sync import idempotency, idempotency_async

    for module in (idempotency, idempotency_async):  # no random purge of expired keys in the count
        monkeypatch.setattr(module, "PURGE_ONE_IN", 1 << 62)
    def upload(n: int) -> int:
        children = [world.register("clinic_a") for _ in range(n)]
        items = [_item(c["id"], _dose(c["birth_date"])) for c in children]
        headers = world.h("clinic_a", **{"Idempotency-Key": uuid.uuid4().hex})
        world.client.post(URL, json={"items": items}, headers=headers)  # warm: the schedule read once per process
        items = [_item(c["id"], _dose(c["birth_date"], vaccine="OPV", dose_number=0)) for c in children]
        with round_trips(monkeypatch) as box:
            r = world.client.post(URL, json={"items": items}, headers=world.h("clinic_a", **{"Idempotency-Key": uuid.uuid4().hex}))
        assert r.status_code == 200 and r.json()["created"] == n
        return box[0]
    loop = [upload(1), upload(20)]
    with sync_path(monkeypatch):
        sync = [upload(1), upload(20)]
    assert loop == [5, 5], loop
    assert all(s >= 10 for s in sync), sync  # 15 and 16 when written (the snapshot's pipeline counted as 3 waits)


@on_pg
def test_a_batch_waits_for_a_merge_and_refuses_the_merged_record(world, runtime):
    """The dose-vs-merge race on the event loop: the merge holds both records FOR UPDATE; the
    batch's FOR KEY SHARE locks (sent before its snapshot) wait for it, then the snapshot sees
    `merged_into`: that item `rejected: conflict, merged`, the other child's dose written."""
    from test_linkage_dose_merge_race import _merge_open_then

    survivor, merged = world.register("clinic_a")["id"], world.register("clinic_a")["id"]
    other = world.register("clinic_a")
    items = [_item(merged, _dose("2026-06-02")), _item(other["id"], _dose(other["birth_date"]))]
    worker = _merge_open_then(runtime, world, survivor, merged, lambda: world.client.post(
        URL, json={"items": items}, headers=world.h("clinic_a")), who=None)
    assert worker.error is None
    r = worker.result
    assert r.status_code == 200
    first, second = r.json()["results"]
    assert (first["result"], first["reason"], first["code"]) == ("rejected", "conflict", "merged")
    assert first["merged_into"] == survivor and second["result"] == "created"
    assert _count(runtime, Immunization.__table__, "patient_id", [merged]) == 0


@on_pg
def test_the_switch_sends_every_batch_to_the_sync_path(world, runtime, monkeypatch):
    """`NHR_SYNC_BATCH_ON_LOOP=false`: the sync batch service answers a batch of doses too."""
    from registry.sync import batch

    called = []
    original = batch.upload

    def spy(*a, **k):
        called.append(True)
        return original(*a, **k)

    monkeypatch.setattr(batch, "upload", spy)
    monkeypatch.setattr(runtime.settings.sync, "batch_on_loop", False)
    child = world.register("clinic_a")
    status, body, _ = _post(world, [_item(child["id"], _dose(child["birth_date"]))], key=uuid.uuid4().hex)
    assert status == 200 and body["created"] == 1 and called == [True]


# --- mixed batches: registrations of new children with their doses (a campaign device's day) ---

def _reg(body: dict | None = None, **over) -> dict:
    from conftest import new_child

    data = {"id": str(uuid.uuid4()), **(body or new_child()), **over}
    return {"op": "patient.create", "data": data}


def _alike_child(first: dict, **over) -> dict:
    """The same child written a second time (test_linkage_within_batch's `_again`): another
    spelling, day and month swapped, a new id; no exact identifier shared."""
    data = {k: v for k, v in first["data"].items() if k not in ("bform", "phone")}
    data["guardian"] = {k: v for k, v in data["guardian"].items() if k != "cnic"}
    return _reg(data, id=str(uuid.uuid4()), given_name=data["given_name"].replace("Zarnigar", "Zarnighar"),
                birth_date="2026-01-06", **over)


def _mixed_items(world, today) -> list:
    """Registrations with doses for them by client reference, a dose before its child's
    registration, a refused registration and a dose for it, a child twice, a taken B-form."""
    from conftest import new_child

    known = world.register("clinic_a")
    born = (today - timedelta(days=20)).isoformat()
    a = _reg(birth_date=born, district="PK-PB-LAH")
    b = _reg(birth_date=born)
    a_pid, b_pid = a["data"]["id"], b["data"]["id"]
    twice = _reg(given_name="Zarnigar" + uuid.uuid4().hex[:6], birth_date="2026-06-01")
    unnamed_bad = _reg({k: v for k, v in new_child().items() if k != "given_name"}, unnamed=True,
                       guardian={"name": "Baby's mother", "relationship": "aunt"})  # refused: not the mother
    return [
        _item(b_pid, _dose(born)),  # before b's registration: not found
        a,
        _item(a_pid, _dose(born)),
        _item(a_pid, _dose(born, vaccine="OPV", dose_number=0)),
        b,
        _item(b_pid, _dose(born, vaccine="OPV", dose_number=0)),
        _item(a_pid, _dose(born, dose_number=2)),  # BCG has one dose: refused
        unnamed_bad,
        _item(unnamed_bad["data"]["id"], _dose(born)),  # its registration refused: not found
        {"op": "patient.create", "data": {k: v for k, v in _reg()["data"].items() if k != "id"}},  # no id: malformed
        {"op": "patient.create", "data": {**_reg()["data"], "bform": known["_input"]["bform"]}},  # B-form taken
        _reg(birth_date=born, district="PK-ZZ-NOPE"),  # unknown district
        twice,
        _alike_child(twice),  # the same child again in the same upload: likely_duplicate_in_file
        _item(known["id"], _dose(known["birth_date"])),
        {"op": "patient.create", "data": {**_reg()["data"], "birth_facility": "NO-SUCH-FACILITY"}},
    ]


def test_a_mixed_batch_answers_writes_and_audits_alike(world, runtime, monkeypatch):
    """Registrations and doses mixed (the same child twice, a taken identifier, a refused item, a
    dose for a child registered earlier in the batch): the same results, rows and events through
    both paths; a full resend gives duplicates; the Idempotency-Key replays the first answer."""
    from registry.citizens.repository import CODES
    from registry.sync import batch

    today = local_today()

    def scenario():
        items = _mixed_items(world, today)
        key = uuid.uuid4().hex
        first = _post(world, items, key=key)
        h = world.h("clinic_a", **{"Idempotency-Key": key})
        replay = world.client.post(URL, json={"items": items}, headers=h)
        again = _post(world, items)  # a full resend without the key: duplicates
        pids = [i["data"]["id"] for i in items if i["op"] == "patient.create" and "id" in i["data"]]
        dose_ids = [i["data"]["id"] for i in items if i["op"] == "dose.record"]
        rows = (_count(runtime, Patient.__table__, "id", pids), _count(runtime, Immunization.__table__, "id", dose_ids),
                _count(runtime, SyncReceipt.__table__, "record_id", pids + dose_ids),
                _count(runtime, CODES, "patient_id", pids))
        created = [r["id"] for r in first[1]["results"] if r["result"] == "created" and r["op"] == "patient.create"]
        return [first, (replay.status_code, replay.headers.get("idempotent-replayed"), _norm(replay.json())), again, rows,
                len(created)]
    spy = []
    original = batch.upload
    monkeypatch.setattr(batch, "upload", lambda *a, **k: spy.append(1) or original(*a, **k))
    first, replay, again, rows, created = _alike(monkeypatch, scenario)
    if PG_URL:
        assert len(spy) == 2  # the sync path's run only (the first and the resend): the event loop answered its own
    status, body, events = first
    assert status == 200, body
    got = [(r["result"], r.get("reason"), r.get("code")) for r in body["results"]]
    assert got == [("rejected", "not_found", None), ("created", None, None), ("created", None, None),
                   ("created", None, None), ("created", None, None), ("created", None, None),
                   ("rejected", "invalid", "dose_number_out_of_range"), ("rejected", "invalid", None),
                   ("rejected", "not_found", None),
                   ("rejected", "invalid", None), ("rejected", "conflict", None), ("rejected", "invalid", None),
                   ("created", None, None), ("rejected", "conflict", "likely_duplicate_in_file"),
                   ("created", None, None), ("rejected", "invalid", None)], got
    assert replay == (200, "true", body)
    resent = [r["result"] for r in again[1]["results"]]
    assert resent.count("duplicate") == 7 and resent[0] == "created"  # the dose before b's registration: b exists now
    assert rows == (3, 5, 8, 3) and created == 3
    actions = sorted(e[:2] for e in events)
    assert actions.count(("patient.create", "success")) == 3 and actions.count(("immunization.create", "success")) == 4
    assert actions.count(("patient.create", "conflict")) == 2 and actions.count(("sync.batch", "success")) == 1
    likely = [e for e in events if e[:2] == ("patient.create", "conflict") and e[6].get("reason") == "likely_duplicate"]
    assert len(likely) == 1 and likely[0][7] == 1  # its candidate (the first copy) as subject
    from registry.audit_log import sealing

    quarantined: list = []  # every event's MAC (over its row and subjects) verifies: none sealed as quarantined
    assert sealing.seal_all(runtime, quarantined=quarantined) >= len(events) and quarantined == []


@on_pg
def test_a_mixed_batch_never_touches_the_sync_batch_and_takes_five_round_trips(world, runtime, monkeypatch):
    from registry.sync import batch, idempotency, idempotency_async

    for module in (idempotency, idempotency_async):
        monkeypatch.setattr(module, "PURGE_ONE_IN", 1 << 62)

    def sync_called(*_a, **_k):
        raise AssertionError("the sync batch ran on PostgreSQL")

    known = world.register("clinic_a")

    def upload() -> int:
        warm = [_reg(), _item(known["id"], _dose(known["birth_date"]))]  # the schedule and linkage model read once
        assert world.client.post(URL, json={"items": warm}, headers=world.h("clinic_a")).status_code == 200
        items = []
        for _ in range(5):
            child = _reg(birth_date=known["birth_date"])
            items += [child, _item(child["data"]["id"], _dose(known["birth_date"])),
                      _item(child["data"]["id"], _dose(known["birth_date"], vaccine="OPV", dose_number=0))]
        with round_trips(monkeypatch) as box:
            r = world.client.post(URL, json={"items": items},
                                  headers=world.h("clinic_a", **{"Idempotency-Key": uuid.uuid4().hex}))
        assert r.status_code == 200 and r.json()["created"] == 15, r.json()
        return box[0]
    with monkeypatch.context() as m:
        m.setattr(batch, "upload", sync_called)
        assert upload() == 5
    with sync_path(monkeypatch):
        sync = upload()
    assert sync >= 15, sync  # 5 registrations one by one, each dose run set-based


@pytest.mark.parametrize("keyed", [False, True])
def test_a_failure_in_a_mixed_batch_leaves_nothing_written(world, runtime, monkeypatch, keyed):
    """A failure injected after the judgement, as the write is sent: 500; no patient, access code,
    dose or receipt; the refusal events only; the key free; the retry registers and records."""
    from registry.citizens.repository import CODES
    from registry.sync import batch_async

    def scenario():
        child = _reg()
        pid = child["data"]["id"]
        items = [child, _item(pid, _dose(child["data"]["birth_date"])),
                 _item(pid, _dose(child["data"]["birth_date"], dose_number=2))]
        key, rid = uuid.uuid4().hex if keyed else None, f"up-{uuid.uuid4().hex}"
        keys = _key_rows(runtime)
        with monkeypatch.context() as m:
            def broken(*_a, **_k):
                raise RuntimeError("injected failure mid-write")
            m.setattr(batch_async, "_write", broken)  # the loop's one write
            from registry.immunizations import batch as dose_batch
            m.setattr(dose_batch, "write", broken)  # the sync path's dose write, after the registration's
            headers = world.h("clinic_a", **{"X-Request-ID": rid, **({"Idempotency-Key": key} if key else {})})
            r = world.client.post(URL, json={"items": items}, headers=headers)
        outcomes = sorted((e.action, e.outcome) for e in audit_events(runtime, request_id=rid))
        ids = [pid] + [i["data"]["id"] for i in items[1:]]
        written = (_count(runtime, Patient.__table__, "id", [pid]), _count(runtime, CODES, "patient_id", [pid]),
                   _count(runtime, Immunization.__table__, "id", ids), _count(runtime, SyncReceipt.__table__, "record_id", ids),
                   _key_rows(runtime) - keys)
        retried = world.client.post(URL, json={"items": items}, headers=world.h("clinic_a", **(
            {"Idempotency-Key": key} if key else {})))
        return [r.status_code, outcomes, written, retried.status_code, retried.json()["created"]]
    assert _alike(monkeypatch, scenario) == [500, [("immunization.create", "invalid")], (0, 0, 0, 0, 0), 200, 2]


def test_a_health_id_already_held_is_drawn_again_in_a_batch(world, runtime, monkeypatch):
    """The first health ID drawn for a batch's registration is a registered child's (one in 1e11,
    forced here): the registration gets another, on both paths (the loop judges the batch again)."""
    from registry import identifiers

    known = world.register("clinic_a")
    real = identifiers.new_health_id

    def scenario():
        calls = []

        def drawn():
            calls.append(1)
            return known["health_id"] if len(calls) == 1 else real()
        with monkeypatch.context() as m:
            m.setattr(identifiers, "new_health_id", drawn)
            r = world.client.post(URL, json={"items": [_reg()]}, headers=world.h("clinic_a"))
        res = r.json()["results"][0]
        return [r.status_code, res["result"], res["health_id"] != known["health_id"], len(calls) >= 2]
    assert _alike(monkeypatch, scenario) == [200, "created", True, True]


@on_pg
def test_a_concurrent_writer_in_a_mixed_batch_gives_the_same_answer(world, runtime, monkeypatch):
    """As the doses-only race above, in a batch that also registers a child with its doses: the
    loop judges the whole batch again (the registration once, its events once), the sync path
    falls back to the single route for the run; the same results, rows and events."""
    from registry.immunizations import batch as dose_batch

    judge = dose_batch.judge

    def scenario():
        known = world.register("clinic_a")
        src = _opv0(world, known)
        child = _reg()
        born = child["data"]["birth_date"]
        items = [child, _item(child["data"]["id"], _dose(born)), _item(known["id"], _dose(known["birth_date"])),
                 _item(child["data"]["id"], _dose(born, dose_number=2))]
        raced = {"done": False}

        def racing(*a, **k):
            if not raced["done"]:
                raced["done"] = True
                with runtime.sessions.begin() as s:  # another writer takes the known child's dose id, committed
                    s.execute(text("INSERT INTO immunizations SELECT (jsonb_populate_record(i, jsonb_build_object('id', "
                                   "CAST(:new AS text)))).* FROM immunizations i WHERE i.id = :src"),
                              {"new": items[2]["data"]["id"], "src": uuid.UUID(src)})
            return judge(*a, **k)
        with monkeypatch.context() as m:
            m.setattr(dose_batch, "judge", racing)
            answer = _post(world, items)
        return [answer, _count(runtime, Patient.__table__, "id", [child["data"]["id"]]),
                _count(runtime, Immunization.__table__, "patient_id", [known["id"], child["data"]["id"]])]
    (status, body, events), patients, doses = _alike(monkeypatch, scenario)
    assert status == 200 and [(r["result"], r.get("reason")) for r in body["results"]] == [
        ("created", None), ("created", None), ("rejected", "conflict"), ("rejected", "invalid")]
    assert patients == 1 and doses == 3
    assert sorted(e[:2] for e in events) == [("immunization.create", "conflict"), ("immunization.create", "invalid"),
                                             ("immunization.create", "success"), ("patient.create", "success"),
                                             ("sync.batch", "success")]


def test_which_batches_run_on_the_loop():
    """`fits_on_loop`: doses and registrations (a caller allowed both), no id twice; corrections,
    voids, a repeated id or a caller without the registration permission take the sync path."""
    from registry.sync.batch_async import fits_on_loop
    from security.access.permissions import Permission

    class Caller:
        def __init__(self, *allowed):
            self.allowed = set(allowed)

        def can(self, permission) -> bool:
            return permission in self.allowed

    both = Caller(Permission.IMMUNIZATION_RECORD, Permission.PATIENT_CREATE)
    child = _reg()
    dose = _item(child["data"]["id"], _dose("2026-06-01"))
    assert fits_on_loop([child, dose], both, 500)
    assert fits_on_loop([{"op": "patient.create", "data": {"given_name": "no id"}}, dose], both, 500)  # refused invalid
    assert not fits_on_loop([child, dose], Caller(Permission.IMMUNIZATION_RECORD), 500)
    assert fits_on_loop([dose], Caller(Permission.IMMUNIZATION_RECORD), 500)
    assert not fits_on_loop([child, dose, child], both, 500)  # the same patient id twice
    assert not fits_on_loop([child, dose, dose], both, 500)  # the same dose id twice
    assert not fits_on_loop([child, {"op": "dose.void", "dose_id": str(uuid.uuid4()), "data": {}}], both, 500)
    assert not fits_on_loop([child, dose], both, 1)


def test_a_mixed_batch_takes_pooled_access_codes(world, runtime, monkeypatch):
    """The access-code pool (registry/citizens/code_pool.py) in a batch: each accepted registration
    takes the oldest row left, a refused one takes none (the loop puts back the row it took for
    it), and each code shown opens its child's citizen login; the same on both paths."""
    from sqlalchemy import delete

    from registry.citizens import code_pool
    from registry.citizens.repository import CODES

    pool = code_pool.POOL

    def rows() -> list:
        with runtime.sessions() as s:
            return s.execute(select(pool).order_by(pool.c.id)).all()

    def scenario():
        with runtime.sessions.begin() as s:
            s.execute(delete(pool))
        assert code_pool.refill(runtime, target=3, batch=3) == 3
        before = rows()
        first, second = _reg(), _reg()
        items = [first, _reg(birth_facility="NO-SUCH-FACILITY"), _item(first["data"]["id"], _dose(first["data"]["birth_date"])), second]
        r = world.client.post(URL, json={"items": items}, headers=world.h("clinic_a"))
        results = r.json()["results"]
        created = [res for res in results if res["op"] == "patient.create" and res["result"] == "created"]
        with runtime.sessions() as s:
            stored = [s.execute(select(CODES.c.code_hash).where(CODES.c.patient_id == uuid.UUID(res["id"]))).scalar_one()
                      for res in created]
        logins = [world.client.post("/api/v1/citizen/token", json={"health_id": res["health_id"],
                                                                    "access_code": res["access_code"]}).status_code
                  for res in created]
        left = rows()
        return [[res["result"] for res in results], stored == [b.code_hash for b in before[:2]],
                [x.id for x in left] == [before[2].id], logins]
    assert _alike(monkeypatch, scenario) == [["created", "rejected", "created", "created"], True, True, [200, 200]]


def _opv0(world, child: dict) -> str:
    """The id of an OPV 0 at birth recorded for `child` through the single route."""
    return world.client.post(f"/api/v1/patients/{child['id']}/immunizations",
                             json={"vaccine": "OPV", "dose_number": 0, "date_given": child["birth_date"]},
                             headers=world.h("clinic_a")).json()["id"]
