"""Recovery (issue 18): how the registry behaves while its database goes away and comes back.

Real PostgreSQL, real connections cut with pg_terminate_backend from another connection (only
this test database's own backends), or a server that is not there (a closed port): no mock of
what is under test.
- a write that cannot reach the database answers 503 with Retry-After, as /readyz does, not 500;
- a commit whose connection is lost during COMMIT answers 503 `outcome-unknown` (never "nothing
  was changed"), and the retry with the same Idempotency-Key then makes the change exactly once;
- after the async pool's connections were cut (as by a server restart) reads still answer 200, and
  after the sync pool's were cut, writes answer 201 (pre-ping);
- an Idempotency-Key claimed by a backend that is gone is released at once, not after 120 s.
"""

from __future__ import annotations

import json
import threading
import time
import uuid

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import event, func, select, text
from sqlalchemy.orm import Session

from api.app import create_app
from conftest import PG_URL, is_postgres, make_settings, new_child
from registry.patients.models import Patient
from registry.runtime import Runtime
from registry.sync import idempotency as store

pg_only = pytest.mark.skipif(not PG_URL, reason="PostgreSQL connections are what is under test")


def _terminate(rt, where: str, params: dict | None = None) -> int:
    """Terminate this test database's backends matching `where` (never another database's), and
    wait until they are gone (bounded)."""
    q = f"FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid() AND ({where})"
    with rt.engine.connect() as c:
        c = c.execution_options(isolation_level="AUTOCOMMIT")
        n = len(c.execute(text(f"SELECT pg_terminate_backend(pid) {q}"), params or {}).all())
        for _ in range(100):
            if c.execute(text(f"SELECT count(*) {q}"), params or {}).scalar_one() == 0:
                break
            time.sleep(0.05)
    return n


def _patients(rt, pid) -> int:
    with rt.sessions() as s:
        return s.execute(select(func.count()).select_from(Patient).where(Patient.id == uuid.UUID(str(pid)))).scalar_one()


def _assert_503(r, slug: str) -> dict:
    assert r.status_code == 503, r.text
    assert r.headers["content-type"].startswith("application/problem+json")
    assert int(r.headers["Retry-After"]) > 0
    body = r.json()
    assert body["type"] == f"urn:nhr:problem:{slug}" and "Traceback" not in r.text
    return body


# --- the database is unreachable -----------------------------------------------------------------

def test_writes_and_reads_answer_503_with_retry_after_while_the_database_is_unreachable(runtime, world, tmp_path):
    """An app whose database is a closed port (its keys and tokens are the shared ones)."""
    with __import__("socket").socket() as s:
        s.bind(("127.0.0.1", 0))
        closed = s.getsockname()[1]
    settings = make_settings(f"postgresql://nhr@127.0.0.1:{closed}/nhr", runtime.settings.key_dir)
    down = Runtime.build(settings)
    client = TestClient(create_app(settings, down), raise_server_exceptions=False)  # no lifespan: it would need the database
    headers = world.h("clinic_a")
    body = _assert_503(client.post("/api/v1/patients", json=new_child(), headers=headers), "database-unavailable")
    assert "nothing was changed" in body["detail"]
    _assert_503(client.post("/api/v1/patients", json=new_child(), headers={**headers, "Idempotency-Key": "k-down-1"}),
                "database-unavailable")
    _assert_503(client.get(f"/api/v1/patients/{uuid.uuid4()}", headers=headers), "database-unavailable")
    ready = client.get("/readyz")
    assert ready.status_code == 503 and int(ready.headers["Retry-After"]) > 0
    fhir = client.get(f"/fhir/R4/Patient/{uuid.uuid4()}", headers=headers)
    assert fhir.status_code == 503 and fhir.json()["resourceType"] == "OperationOutcome", fhir.text
    assert int(fhir.headers["Retry-After"]) > 0
    down.engine.dispose()


# --- the connection is lost during COMMIT ----------------------------------------------------------

class _CutDuringCommit:
    """Terminates the backend of the next commit(s) after `skip` others, from another connection,
    just before COMMIT is sent: to the client that is a connection lost during COMMIT."""

    def __init__(self, rt, skip: int = 0) -> None:
        self.rt, self.skip, self.cut = rt, skip, 0
        self.lock = threading.Lock()

    def __call__(self, conn) -> None:
        with self.lock:
            if self.skip:
                self.skip -= 1
                return
            if self.cut:
                return
            self.cut = conn.connection.driver_connection.info.backend_pid
        _terminate(self.rt, "pid = :pid", {"pid": self.cut})

    def __enter__(self):
        event.listen(self.rt.engine, "commit", self)
        # The routes on the async unit of work (registry/async_unit.py: register, record a dose)
        # commit on the async pool's connection: cut the first such COMMIT too (their claim is
        # made in autocommit, so `skip` counts the sync engine's commits only).
        from registry.async_unit import AsyncUnit

        self._original = original = AsyncUnit.commit
        cutter = self

        async def commit(unit):
            if unit.in_transaction and not cutter.cut:
                cutter.cut = unit.lease.conn.info.backend_pid
                _terminate(cutter.rt, "pid = :pid", {"pid": cutter.cut})
            return await original(unit)

        AsyncUnit.commit = commit
        return self

    def __exit__(self, *exc):
        from registry.async_unit import AsyncUnit

        event.remove(self.rt.engine, "commit", self)
        AsyncUnit.commit = self._original


@pg_only
def test_commit_lost_without_a_key_answers_outcome_unknown(runtime, world):
    headers = world.h("clinic_a")
    with _CutDuringCommit(runtime) as cut:
        r = world.client.post("/api/v1/patients", json=new_child(), headers=headers)
    assert cut.cut
    body = _assert_503(r, "outcome-unknown")
    assert body["outcome"] == "unknown" and "Idempotency-Key" in body["detail"]
    assert "nothing was changed" not in r.text


@pg_only
def test_commit_lost_with_a_key_then_the_retry_makes_the_change_once(runtime, world):
    """The keyed request's claim commits first (skipped), then its data commit loses its
    connection: 503 outcome-unknown. The retry with the same key runs at once (the claim's
    backend is gone) and the patient exists exactly once."""
    child, key = new_child(id=str(uuid.uuid4())), f"k-{uuid.uuid4()}"
    headers = {**world.h("clinic_a"), "Idempotency-Key": key}
    with _CutDuringCommit(runtime, skip=1) as cut:
        r = world.client.post("/api/v1/patients", json=child, headers=headers)
    assert cut.cut
    _assert_503(r, "outcome-unknown")
    retry = world.client.post("/api/v1/patients", json=child, headers=headers)
    assert retry.status_code == 201, retry.text
    again = world.client.post("/api/v1/patients", json=child, headers=headers)
    assert again.status_code == 201 and again.headers["idempotent-replayed"] == "true"
    assert _patients(runtime, child["id"]) == 1


# --- the async pool after a restart ------------------------------------------------------------------

@pg_only
def test_reads_succeed_after_the_async_pools_connections_were_cut(runtime, world, client):
    """As after a PostgreSQL restart: every pooled connection of the hot paths is dead. Each
    would have answered one 500; the first read on it now runs again on a fresh connection."""
    pid = world.register()["id"]
    headers = world.h("clinic_a")
    assert client.get(f"/api/v1/patients/{pid}", headers=headers).status_code == 200
    # Grow the pool: concurrent reads check out several connections.
    threads = [threading.Thread(target=lambda: client.get(f"/api/v1/patients/{pid}", headers=headers)) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert _terminate(runtime, "application_name = 'nhr-hot-path'") >= 1
    statuses = [client.get(f"/api/v1/patients/{pid}", headers=headers).status_code for _ in range(12)]
    assert statuses == [200] * 12
    search = client.post("/api/v1/patients/search", json={"system": "nhr", "value": world.register()["health_id"]},
                         headers=headers)
    assert search.status_code == 200


@pg_only
def test_writes_and_reads_succeed_after_the_sync_pools_connections_were_cut(runtime, world, client):
    """As after a PostgreSQL restart: every idle connection of the sync engine (the unit of work's
    pool, which serves every write) is dead. The pool tests each connection before lending it
    (pre-ping), so the next requests answer 201 and 200, not 503 or 500."""
    headers = world.h("clinic_a")
    # Grow the pool: concurrent writes check out several connections.
    threads = [threading.Thread(target=lambda: client.post("/api/v1/patients", json=new_child(), headers=headers))
               for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert runtime.engine.pool.checkedin() >= 2
    assert _terminate(runtime, "application_name <> 'nhr-hot-path'") >= 1
    created = [client.post("/api/v1/patients", json=new_child(), headers=headers) for _ in range(8)]
    assert [r.status_code for r in created] == [201] * 8, [r.json().get("type") for r in created]
    pid = created[0].json()["id"]
    dose = client.post(f"/api/v1/patients/{pid}/immunizations", headers=headers,
                       json={"vaccine": "BCG", "dose_number": 1, "date_given": "2026-06-02"})
    assert dose.status_code == 201, dose.json().get("type")
    listed = client.get(f"/api/v1/patients/{pid}/immunizations", headers=headers)
    assert listed.status_code == 200


# --- an Idempotency-Key whose owner died ---------------------------------------------------------------

def _user_id(world, who: str):
    from registry.users.models import User

    with world.runtime.sessions() as s:
        return s.execute(select(User.id).where(User.username == world.users[who])).scalar_one()


def test_a_claim_is_released_as_soon_as_its_backend_is_gone(runtime, world, client):
    """A crashed request's claim, made on its own connection (as the API does), 120 s lock. While
    that backend lives: 409. Once it is killed: the retry runs at once (PostgreSQL). SQLite has no
    owner to ask: the lock timeout still decides."""
    child = new_child(id=str(uuid.uuid4()))
    raw = json.dumps(child).encode()
    key, path = f"k-{uuid.uuid4()}", "/api/v1/patients"
    kh = store.key_hash(_user_id(world, "clinic_a"), "POST", path, key)
    headers = {**world.h("clinic_a"), "Idempotency-Key": key, "Content-Type": "application/json"}
    owner = runtime.engine.connect()
    try:
        with Session(bind=owner) as s:
            claimed = store.claim(s, runtime.keyring, kh, store.fingerprint("POST", path, raw), lock_seconds=120, ttl_seconds=3600)
            s.commit()
        assert isinstance(claimed, store.Claim)
        assert client.post(path, content=raw, headers=headers).status_code == 409  # its owner is alive
        if not is_postgres(runtime):
            return
        backend = owner.connection.driver_connection.info.backend_pid
        assert _terminate(runtime, "pid = :pid", {"pid": backend}) == 1
        r = client.post(path, content=raw, headers=headers)
        assert r.status_code == 201, r.text
        assert _patients(runtime, child["id"]) == 1
    finally:
        owner.invalidate() if is_postgres(runtime) else None
        owner.close()
