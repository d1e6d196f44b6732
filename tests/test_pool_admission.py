"""The upload-burst stall (issue 17/18): more uploads in flight than the sync pool has connections.

A real `nhr serve` worker with a deliberately small sync pool (NHR_DB_POOL_SIZE=2: 4 connections)
and a small thread pool (NHR_THREADPOOL_SIZE=6), and 8 times the pool's capacity of concurrent
batch uploads, each with an Idempotency-Key (the path that pins its connection for the claim, the
route and the commit). Before api/admission.py, the threads of the requests waiting for a
connection blocked in the pool's checkout, the requests holding the connections found no thread
to continue, and the pool's 30 s timeout failed them (measured on the code before the fix: 10 of
the 32 answered 500; a pool timeout now maps to 503). Now every upload must succeed and every
dose be stored exactly once. No timing assertion beyond generous
deadlines; the admission timeout is set far above them so that a slow machine cannot refuse.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
from sqlalchemy import func, select

from conftest import is_postgres, new_child
from registry.immunizations.models import Immunization
from registry.patients.models import Patient

POOL_SIZE = 2  # + as much overflow: 4 connections
CAPACITY = 2 * POOL_SIZE
UPLOADS = 8 * CAPACITY
START_DEADLINE = 180  # seconds for the worker to import and start serving on a loaded machine
REQUEST_TIMEOUT = 240  # generous: the burst is answered in a few seconds when nothing stalls


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _healthy(port: int) -> bool:
    try:
        return httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def _until(predicate, deadline: float) -> bool:
    end = time.monotonic() + deadline
    while time.monotonic() < end:
        if predicate():
            return True
        time.sleep(0.3)
    return predicate()


def _upload(port: int, token: str) -> tuple[int, list[str], list[str], dict]:
    pid, doses = str(uuid.uuid4()), [str(uuid.uuid4()), str(uuid.uuid4())]
    items = [{"op": "patient.create", "data": new_child(id=pid)},
             {"op": "dose.record", "patient_id": pid,
              "data": {"id": doses[0], "vaccine": "BCG", "dose_number": 1, "date_given": "2026-06-02"}},
             {"op": "dose.record", "patient_id": pid,
              "data": {"id": doses[1], "vaccine": "OPV", "dose_number": 0, "date_given": "2026-06-02"}}]
    r = httpx.post(f"http://127.0.0.1:{port}/api/v1/sync/batch", json={"items": items}, timeout=REQUEST_TIMEOUT,
                   headers={"Authorization": f"Bearer {token}", "Idempotency-Key": uuid.uuid4().hex})
    body = r.json()
    results = [x.get("result") for x in body.get("results", [])] if r.status_code == 200 else []
    return r.status_code, [pid], doses, {"results": results, "type": body.get("type")}


def test_a_burst_beyond_the_pool_capacity_is_served_without_stalling(world, runtime, tmp_path):
    if not is_postgres(runtime):
        pytest.skip("the stall needs PostgreSQL's QueuePool under a real `nhr serve` (SQLite serialises writers anyway); "
                    "run with NHR_TEST_DATABASE_URL")
    token = world.token("clinic_a")
    port = _free_port()
    log = tmp_path / "serve.log"
    env = {**os.environ, "NHR_DATABASE_URL": runtime.settings.database_url, "NHR_KEY_DIR": str(runtime.settings.key_dir),
           "NHR_ENV": "test", "NHR_AUDIT_SEAL_INTERVAL_SECONDS": "0", "NHR_REPORT_REFRESH_INTERVAL_SECONDS": "0",
           "NHR_DB_POOL_SIZE": str(POOL_SIZE), "NHR_THREADPOOL_SIZE": "6", "NHR_DB_ADMISSION_TIMEOUT_SECONDS": "600",
           "NHR_RATE_LIMIT_REQUESTS": "0"}
    nhr = Path(sys.executable).parent / "nhr"
    with open(log, "wb") as out:
        server = subprocess.Popen([str(nhr), "serve", "--port", str(port), "--workers", "1"], env=env, stdout=out,
                                  stderr=subprocess.STDOUT, start_new_session=True)
    try:
        assert _until(lambda: _healthy(port), START_DEADLINE), log.read_text(errors="replace")[-2000:]
        with ThreadPoolExecutor(UPLOADS) as pool:
            answers = list(pool.map(lambda _: _upload(port, token), range(UPLOADS)))
        statuses = sorted(a[0] for a in answers)
        failed = [(a[0], a[3]["type"]) for a in answers if a[0] != 200]
        assert not failed, f"{len(failed)} of {UPLOADS} uploads failed: {failed[:5]}"
        assert all(a[3]["results"] == ["created", "created", "created"] for a in answers), statuses
        patients = [p for a in answers for p in a[1]]
        doses = [d for a in answers for d in a[2]]
        with runtime.sessions() as s:
            stored = s.execute(select(Immunization.id).where(Immunization.id.in_([uuid.UUID(d) for d in doses]))).scalars().all()
            n_patients = s.execute(select(func.count()).select_from(Patient)
                                   .where(Patient.id.in_([uuid.UUID(p) for p in patients]))).scalar_one()
        assert len(stored) == len(set(stored)) == len(doses) == 2 * UPLOADS  # every dose exactly once
        assert n_patients == UPLOADS
    finally:
        server.send_signal(signal.SIGTERM)
        try:
            server.wait(60)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)  # the group this test started, by its id
            server.wait(10)


# The admission middleware itself, in process (both databases): a real QueuePool of one
# connection, an inner app that holds its place until told to finish.

def _scope(app, path="/api/v1/sync/batch") -> dict:
    return {"type": "http", "method": "POST", "path": path, "headers": [], "app": app, "state": {"request_id": "r-1"}}


def _fake_app(timeout: float):
    """The parts of the FastAPI app the middleware reads: the runtime's engine and settings."""
    from types import SimpleNamespace

    from sqlalchemy import create_engine
    from sqlalchemy.pool import QueuePool

    engine = create_engine("sqlite://", poolclass=QueuePool, pool_size=1, max_overflow=0)
    settings = SimpleNamespace(serve=SimpleNamespace(db_admission_timeout_seconds=timeout))
    return SimpleNamespace(state=SimpleNamespace(runtime=SimpleNamespace(engine=engine, settings=settings)))


def _run_burst(path: str):
    import asyncio

    from api.admission import AdmissionMiddleware

    async def scenario():
        release, entered = asyncio.Event(), []

        async def inner(scope, receive, send):
            entered.append(scope["path"])
            await release.wait()
            await send({"type": "http.response.start", "status": 200, "headers": []})
            await send({"type": "http.response.body", "body": b"ok"})

        mw, app = AdmissionMiddleware(inner), _fake_app(0.3)
        sent: dict[int, list] = {0: [], 1: [], 2: []}

        def sender(i):
            async def send(message):
                sent[i].append(message)
            return send

        first = asyncio.create_task(mw(_scope(app, path), None, sender(0)))
        await asyncio.sleep(0.05)
        await mw(_scope(app, path), None, sender(1))  # waits 0.3 s on the loop for the one place, then 503
        release.set()
        await first
        await mw(_scope(app, path), None, sender(2))  # the place was given back
        return entered, sent

    return asyncio.run(scenario())


def test_a_request_that_waits_too_long_for_a_place_gets_503_problem_with_retry_after():
    import json

    entered, sent = _run_burst("/api/v1/sync/batch")
    assert len(entered) == 2  # the refused one never reached the app
    assert sent[0][0]["status"] == 200 and sent[2][0]["status"] == 200
    start, body = sent[1]
    headers = dict(start["headers"])
    assert start["status"] == 503 and headers[b"content-type"] == b"application/problem+json"
    assert int(headers[b"retry-after"]) > 0
    problem = json.loads(body["body"])
    assert (problem["type"], problem["status"], problem["request_id"]) == ("urn:nhr:problem:overloaded", 503, "r-1")


def test_under_fhir_the_refusal_is_an_operation_outcome():
    import json

    _, sent = _run_burst("/fhir/R4/Immunization")
    start, body = sent[1]
    assert start["status"] == 503 and dict(start["headers"])[b"content-type"] == b"application/fhir+json"
    assert json.loads(body["body"])["resourceType"] == "OperationOutcome"


def test_pool_capacity_is_size_plus_overflow():
    from sqlalchemy import create_engine
    from sqlalchemy.pool import NullPool, QueuePool

    from api.admission import pool_capacity
    from registry.database import make_engine

    assert pool_capacity(make_engine("postgresql://nobody@127.0.0.1:1/none", pool_size=3)) == 6
    assert pool_capacity(create_engine("sqlite://", poolclass=QueuePool, pool_size=2, max_overflow=-1)) is None
    assert pool_capacity(create_engine("sqlite://", poolclass=NullPool)) is None


def test_an_exhausted_pool_wait_means_unavailable_not_500():
    """A checkout that timed out is a 503 with Retry-After (registry/database.py), never a 500."""
    from sqlalchemy import create_engine
    from sqlalchemy import exc as sa_exc
    from sqlalchemy.pool import QueuePool

    from registry import database

    engine = create_engine("sqlite://", poolclass=QueuePool, pool_size=1, max_overflow=0, pool_timeout=0.1)
    with engine.connect():
        with pytest.raises(sa_exc.TimeoutError) as caught:
            engine.connect()
    assert database.unavailable(caught.value)
