"""Access codes made ahead of registration by `nhr worker` (issue 17, registry/citizens/code_pool.py).

A registration takes a ready code from the node's pool in its own transaction instead of hashing
one: the code it shows logs in, it is never in the clear at rest, it is issued at most once (also
under concurrent registrations on PostgreSQL), a registration that rolls back leaves its row in
the pool unissued, an empty pool falls back to hashing, and the refill stays within its bounds.
Each scenario runs on the event loop (PostgreSQL) and on the sync path (SQLite, or forced)."""

from __future__ import annotations

import threading
import uuid
from contextlib import contextmanager
from types import SimpleNamespace

import pytest
from sqlalchemy import delete, select

from conftest import PG_URL, new_child
from registry.citizens import code_pool, codes
from registry.citizens.models import PatientAccessCode
from registry.runtime import Runtime

POOL = code_pool.POOL
CODES = PatientAccessCode.__table__
on_pg = pytest.mark.skipif(not PG_URL, reason="concurrent takers need PostgreSQL's row locks")


@contextmanager
def sync_path(monkeypatch):
    """The sync service on this database too: no async pool, so no async unit of work."""
    with monkeypatch.context() as m:
        m.setattr(Runtime, "aio", property(lambda self: None))
        yield


def paths(monkeypatch):
    """Run the body once per registration path ("loop": the async unit on PostgreSQL, else the same
    sync path as "sync")."""
    yield "loop"
    with sync_path(monkeypatch):
        yield "sync"


def _empty(rt) -> None:
    with rt.sessions.begin() as s:
        s.execute(delete(POOL))


def _fill(rt, n: int) -> list:
    """An emptied pool refilled with `n` codes -> its raw rows."""
    _empty(rt)
    assert code_pool.refill(rt, target=n, batch=n) == n
    return _rows(rt)


def _rows(rt) -> list:
    with rt.sessions() as s:
        return s.execute(select(POOL).order_by(POOL.c.id)).all()


def _stored_hash(rt, patient_id: str) -> str:
    with rt.sessions() as s:
        return s.execute(select(CODES.c.code_hash).where(CODES.c.patient_id == uuid.UUID(patient_id))).scalar_one()


def _logs_in(client, child: dict) -> bool:
    r = client.post("/api/v1/citizen/token", json={"health_id": child["health_id"], "access_code": child["access_code"]})
    return r.status_code == 200


def test_a_pooled_code_is_issued_once_and_logs_in(world, runtime, monkeypatch):
    for path in paths(monkeypatch):
        before = _fill(runtime, 3)
        child = world.register("clinic_a")
        after = _rows(runtime)
        assert len(after) == 2, path
        [taken] = [r for r in before if r.id not in {a.id for a in after}]
        assert taken.id == before[0].id, path  # the oldest row
        assert _stored_hash(runtime, child["id"]) == taken.code_hash, path
        assert code_pool.open_sealed(runtime.keyring, taken.code_hash, taken.code_ct) == child["access_code"], path
        assert _logs_in(world.client, child), path


def test_no_code_in_the_clear_in_the_pool(world, runtime):
    """The raw rows hold argon2id hashes and ciphertexts: no issued code appears in them in any
    form, and a ciphertext does not open under another row's hash."""
    rows = _fill(runtime, 4)
    issued = [world.register("clinic_a")["access_code"] for _ in range(4)]
    assert _rows(runtime) == []
    raw = b"".join(r.code_hash.encode() + b"|" + bytes(r.code_ct) for r in rows)
    for code in issued:
        compact = codes.normalise(code)
        for form in (code, compact, compact.lower(), code.lower()):
            assert form.encode() not in raw
    assert all(r.code_hash.startswith("$argon2id$") for r in rows)
    assert code_pool.open_sealed(runtime.keyring, rows[1].code_hash, rows[0].code_ct) is None
    assert code_pool.open_sealed(runtime.keyring, rows[0].code_hash, rows[0].code_ct) in issued


def test_an_empty_pool_falls_back_to_hashing(world, runtime, monkeypatch):
    for path in paths(monkeypatch):
        _empty(runtime)
        child = world.register("clinic_a")
        assert _stored_hash(runtime, child["id"]).startswith("$argon2id$"), path
        assert _logs_in(world.client, child), path
        assert _rows(runtime) == [], path


def test_a_row_that_does_not_open_is_consumed_and_the_code_hashed(world, runtime, monkeypatch):
    for path in paths(monkeypatch):
        _fill(runtime, 2)
        with runtime.sessions.begin() as s:  # the first row's ciphertext under the second row's hash
            first, second = s.execute(select(POOL).order_by(POOL.c.id)).all()
            s.execute(POOL.update().where(POOL.c.id == first.id).values(code_ct=second.code_ct))
        child = world.register("clinic_a")
        assert [r.id for r in _rows(runtime)] == [second.id], path
        assert _stored_hash(runtime, child["id"]) not in (first.code_hash, second.code_hash), path
        assert _logs_in(world.client, child), path


def test_a_refused_or_failed_registration_leaves_its_code_unissued(world, runtime, monkeypatch):
    """Decision: the row is taken in the registration's transaction, so a refusal (409) or a
    failure after the writes (500) rolls the take back: the row stays in the pool, its code was in
    no response, and no patient holds its hash; the next registration takes it."""
    from registry.patients import codec

    for path in paths(monkeypatch):
        existing = world.register("clinic_a")
        rows = _fill(runtime, 2)
        dup = world.client.post("/api/v1/patients", json=new_child(bform=existing["_input"]["bform"]), headers=world.h("clinic_a"))
        assert dup.status_code == 409, path
        with monkeypatch.context() as m:
            m.setattr(codec, "to_view", lambda *_a, **_k: (_ for _ in ()).throw(RuntimeError("injected failure")))
            failed = world.client.post("/api/v1/patients", json=new_child(), headers=world.h("clinic_a"))
        assert failed.status_code == 500, path
        assert _rows(runtime) == rows, path
        for r in (dup, failed):
            assert "access_code" not in r.json(), path
        with runtime.sessions() as s:
            assert not s.execute(select(CODES.c.patient_id).where(CODES.c.code_hash.in_([r.code_hash for r in rows]))).all(), path
        child = world.register("clinic_a")
        assert _stored_hash(runtime, child["id"]) == rows[0].code_hash, path


@on_pg
def test_concurrent_takers_never_share_a_row(runtime):
    """Takers holding their transactions open together each get their own row (SKIP LOCKED), none
    waits for another, and the rows are gone once they commit."""
    rows = _fill(runtime, 6)
    n = 4
    barrier, got, errors = threading.Barrier(n, timeout=60), [], []

    def taker():
        try:
            with runtime.sessions.begin() as s:
                code, code_hash = code_pool.issue(s, runtime.keyring, runtime.code_hasher)
                barrier.wait()  # every taker holds its row here at once
                got.append((code, code_hash))
        except Exception as exc:  # noqa: BLE001 - reported below
            errors.append(type(exc).__name__)
    threads = [threading.Thread(target=taker) for _ in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert errors == []
    assert len({h for _, h in got}) == n and len({c for c, _ in got}) == n
    assert {h for _, h in got} <= {r.code_hash for r in rows}
    assert len(_rows(runtime)) == len(rows) - n


@on_pg
def test_concurrent_registrations_issue_distinct_pool_codes(world, runtime):
    rows = _fill(runtime, 12)
    n, results = 8, []

    def register():
        results.append(world.client.post("/api/v1/patients", json=new_child(), headers=world.h("clinic_a")))
    world.token("clinic_a")
    threads = [threading.Thread(target=register) for _ in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert [r.status_code for r in results] == [201] * n
    children = [r.json() for r in results]
    hashes = [_stored_hash(runtime, c["id"]) for c in children]
    assert len(set(hashes)) == n and set(hashes) <= {r.code_hash for r in rows}
    assert len({c["access_code"] for c in children}) == n
    assert {r.id for r in _rows(runtime)} == {r.id for r in rows if r.code_hash not in hashes}


def test_the_refill_is_bounded(runtime):
    _empty(runtime)
    assert code_pool.refill(runtime, target=7, batch=5) == 5
    assert code_pool.refill(runtime, target=7, batch=5) == 2
    assert code_pool.refill(runtime, target=7, batch=5) == 0
    assert code_pool.refill(runtime, target=3, batch=5) == 0  # above a lowered target: nothing added, nothing dropped
    assert len(_rows(runtime)) == 7
    _empty(runtime)
    added = []
    threads = [threading.Thread(target=lambda: added.append(code_pool.refill(runtime, target=4, batch=4))) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert sum(added) == 4 and len(_rows(runtime)) == 4  # two refills at once stay within the target
    _empty(runtime)


def test_the_refill_job_is_off_without_a_pool(runtime):
    settings = runtime.settings.model_copy(update={"citizen": runtime.settings.citizen.model_copy(update={"code_pool_size": 0})})
    assert code_pool.start_background(SimpleNamespace(settings=settings)) is None


def test_the_refill_job_is_off_and_says_so_once_when_the_keyring_lacks_the_secret(runtime, caplog):
    """A production keyring provisioned before the pool (no `access-code-pool` secret, nothing
    created on first use): the job does not start, rather than failing and logging every tick."""
    from security.crypto.errors import KeyUnavailable

    class Keyring:
        def secret(self, name):
            raise KeyUnavailable(f"{name} is missing from the keyring")

    with caplog.at_level("WARNING", logger="nhr.citizens.code_pool"):
        assert code_pool.start_background(SimpleNamespace(settings=runtime.settings, keyring=Keyring())) is None
    assert [r.getMessage() for r in caplog.records].count(
        "access code pool off: the keyring has no 'access-code-pool' secret (run `nhr keys init`); "
        "registrations hash their own codes") == 1


def test_the_refill_hashes_at_the_lowest_priority(runtime, monkeypatch):
    """The hashing runs in a thread of its own at nice 19 (Linux), so it yields the cores to requests;
    the caller's thread keeps its priority."""
    import os

    seen = []
    real = code_pool.made

    def spy(rt, n):
        seen.append(os.getpriority(os.PRIO_PROCESS, threading.get_native_id()))
        return real(rt, n)
    monkeypatch.setattr(code_pool, "made", spy)
    mine = os.getpriority(os.PRIO_PROCESS, threading.get_native_id())
    _empty(runtime)
    assert code_pool.refill(runtime, target=2, batch=2) == 2
    assert seen == [code_pool.REFILL_NICE]
    assert os.getpriority(os.PRIO_PROCESS, threading.get_native_id()) == mine
    _empty(runtime)


def test_on_sqlite_an_empty_pool_hashes_before_the_write_lock(world, runtime, monkeypatch):
    """The sync path on SQLite: with the pool empty the code is hashed before the registration's
    first statement (which takes SQLite's write lock), not while holding it."""
    from registry.patients import service

    if runtime.engine.dialect.name != "sqlite":
        pytest.skip("SQLite's write lock")
    _empty(runtime)
    states = []
    real = service.access_codes.issue

    def spy(hasher):
        states.append(runtime.engine.pool.checkedout())
        return real(hasher)
    monkeypatch.setattr(service.access_codes, "issue", spy)
    with sync_path(monkeypatch):
        world.register("clinic_a")
    assert states == [0]
