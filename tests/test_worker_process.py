"""`nhr worker` (issue 17): the audit sealer and the coverage refresher as their own process.

With the API's in-process worker off (the production default, NHR_IN_PROCESS_WORKER), the API
seals nothing; events are sealed once a real `nhr worker` subprocess runs, and SIGTERM stops it
cleanly (exit 0). Bounded loops with generous deadlines, no timed assertion beyond them.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

from fastapi.testclient import TestClient
from sqlalchemy import func, insert, select

from api.app import create_app
from registry import bootstrap
from registry.runtime import Runtime
from registry.settings import Settings
from security.access.principal import AccessContext
from security.audit.models import AuditLogLeafRow
from security.audit.sealer import EVENTS, SUBJECTS
from security.audit.trail import SUCCESS, AuditTrail, PatientRef
from tests.conftest import drop_database, fresh_database_url, make_settings

DEADLINE = 180  # seconds for a subprocess to import, start and seal on a loaded machine


def _until(predicate, deadline: float, step: float = 0.2) -> bool:
    end = time.monotonic() + deadline
    while time.monotonic() < end:
        if predicate():
            return True
        time.sleep(step)
    return predicate()


def _insert_events(rt: Runtime, n: int) -> set[uuid.UUID]:
    trail = AuditTrail(AccessContext(None, "TREAT", "req-worker-test", "127.0.0.1"))
    rows = [trail.build("patient.read", SUCCESS, resource_id=uuid.uuid4(), patient=PatientRef(uuid.uuid4(), "PK-PB", "PK-PB-LAH"),
                        detail={"i": i}) for i in range(n)]
    with rt.sessions.begin() as s:
        s.execute(insert(EVENTS), [rt.event_mac.sign(r, [r["patient_id"]]) for r in rows])
        s.execute(insert(SUBJECTS), [{"event_id": r["id"], "patient_id": r["patient_id"]} for r in rows])
    return {r["id"] for r in rows}


def _sealed(rt: Runtime, ids: set[uuid.UUID]) -> int:
    with rt.sessions() as s:
        return s.scalar(select(func.count()).select_from(AuditLogLeafRow).where(AuditLogLeafRow.event_id.in_(ids)))


def test_in_process_worker_is_off_in_production_by_default(tmp_path):
    production = dict(env="production", database_url="postgresql://nhr@db:5432/nhr", key_dir=tmp_path)
    assert Settings(**production).runs_worker_in_process is False
    assert Settings(**production, in_process_worker=True).runs_worker_in_process is True
    assert Settings(env="development").runs_worker_in_process is True  # the demo seals with nothing else started
    assert Settings(env="test", in_process_worker=False).runs_worker_in_process is False


def _serve_briefly(rt: Runtime) -> None:
    """Start the app (its lifespan starts the in-process worker or not), answer a request, and
    give a sealer that would run twenty of its intervals to do so."""
    with TestClient(create_app(rt.settings, rt)) as client:
        assert client.get("/healthz").status_code == 200
        time.sleep(20 * rt.settings.audit.seal_interval_seconds)


def test_events_are_sealed_only_once_nhr_worker_runs(tmp_path):
    url = fresh_database_url(tmp_path, "worker")
    audit = {"seal_interval_seconds": 0.1}
    rt = Runtime.build(make_settings(url, tmp_path / "keyring", audit=audit).model_copy(update={"in_process_worker": False}))
    try:
        bootstrap.init(rt)
        ids = _insert_events(rt, 5)
        _serve_briefly(rt)
        assert _sealed(rt, ids) == 0, "the API sealed events with its in-process worker off"

        env = {**os.environ, "NHR_DATABASE_URL": url, "NHR_KEY_DIR": str(rt.settings.key_dir), "NHR_ENV": "test",
               "NHR_AUDIT_SEAL_INTERVAL_SECONDS": "0.2", "NHR_REPORT_REFRESH_INTERVAL_SECONDS": "0.2"}
        log = tmp_path / "worker.log"
        nhr = Path(sys.executable).parent / "nhr"
        with open(log, "wb") as out:
            worker = subprocess.Popen([str(nhr), "worker"], env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            assert _until(lambda: _sealed(rt, ids) == len(ids), DEADLINE), log.read_text(errors="replace")
            later = _insert_events(rt, 3)  # and it keeps sealing what comes after
            assert _until(lambda: _sealed(rt, later) == len(later), DEADLINE), log.read_text(errors="replace")
        finally:
            worker.send_signal(signal.SIGTERM)
            try:
                code = worker.wait(60)
            except subprocess.TimeoutExpired:
                os.killpg(worker.pid, signal.SIGKILL)  # the group this test started, by its id
                worker.wait(10)
                code = None
        text = log.read_text(errors="replace")
        assert code == 0, text
        assert "worker stopped" in text and "Traceback" not in text
    finally:
        rt.engine.dispose()
        drop_database(url)


def test_the_api_seals_in_process_when_on(tmp_path):
    """The control: the same app with the in-process worker on seals the same kind of events."""
    url = fresh_database_url(tmp_path, "inproc")
    rt = Runtime.build(make_settings(url, tmp_path / "keyring", audit={"seal_interval_seconds": 0.1})
                       .model_copy(update={"in_process_worker": True}))
    try:
        bootstrap.init(rt)
        ids = _insert_events(rt, 5)
        with TestClient(create_app(rt.settings, rt)) as client:
            assert client.get("/healthz").status_code == 200
            assert _until(lambda: _sealed(rt, ids) == len(ids), DEADLINE)
    finally:
        rt.engine.dispose()
        drop_database(url)
