"""A dose recorded while its record is being merged (issue 13) never stays on the merged record.

Two real connections, each in its own thread and transaction. On PostgreSQL the dose paths read
the patient `FOR KEY SHARE` (patients.repository.lock_for_doses) and a merge locks both records
`FOR UPDATE`; the tests wait until one connection is really blocked on the other's lock
(pg_stat_activity) before letting the first commit, so the interleaving is the one named, not a
timing accident. On SQLite, BEGIN IMMEDIATE serialises the writers; the same outcomes hold.

- merge first: the dose (single route, the set-based path of sync batch and FHIR bundles, a bulk
  import) is refused as `merged`, naming the survivor; nothing is written on the merged record;
- dose first: the merge waits for it, then moves it to the survivor with its provenance.
Values are compared, never printed."""

from __future__ import annotations

import csv
import threading
import time
import uuid
from datetime import date

import pytest
from sqlalchemy import select, text

from conftest import is_postgres
from registry.bulk import importer, sources
from registry.context import ServiceContext
from registry.immunizations import batch as dose_batch
from registry.immunizations import service as doses
from registry.immunizations.models import Immunization
from registry.immunizations.schemas import DoseCreate
from registry.linkage import merge as merging
from registry.linkage.steward_schemas import MergeRequest
from registry.patients.service import Merged
from registry.users.models import User
from registry.users.service import principal_of
from security.access.principal import AccessContext
from security.audit.trail import AuditTrail
from test_linkage_merge_effects import merge

D = Immunization.__table__


def _ctx(session, rt, world, who: str) -> ServiceContext:
    user = session.execute(select(User).where(User.username == world.users[who])).scalar_one()
    return ServiceContext(session, rt, AuditTrail(AccessContext(principal_of(user), "TREAT", uuid.uuid4().hex, None)))


def _bcg() -> DoseCreate:
    return DoseCreate(vaccine="BCG", dose_number=1, date_given=date(2026, 6, 2))


class Worker(threading.Thread):
    """`work(ctx)` in its own session and transaction (or `work()` alone when `who` is None:
    it opens its own); keeps the result or the exception."""

    def __init__(self, rt, world, who: str | None, work) -> None:
        super().__init__(daemon=True)
        self.rt, self.world, self.who, self.work = rt, world, who, work
        self.result = self.error = None

    def run(self) -> None:
        try:
            if self.who is None:
                self.result = self.work()
                return
            with self.rt.sessions.begin() as s:
                self.result = self.work(_ctx(s, self.rt, self.world, self.who))
        except Exception as exc:  # noqa: BLE001 - handed to the test
            self.error = exc


def _wait_until_blocked(rt, worker: Worker) -> None:
    """PostgreSQL: until another backend of this database waits on a lock. SQLite: a moment
    (its writers queue on BEGIN IMMEDIATE; the outcome does not depend on the timing)."""
    if not is_postgres(rt):
        time.sleep(0.3)
        return
    deadline = time.monotonic() + 60
    with rt.engine.connect() as c:
        while time.monotonic() < deadline:
            waiting = c.execute(text("SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                                     "AND wait_event_type = 'Lock'")).scalar_one()
            c.rollback()
            if waiting:
                return
            assert worker.is_alive(), worker.error
            time.sleep(0.02)
    pytest.fail("the second connection never waited for the first")


def _owners(rt, pids) -> dict[str, list[str]]:
    with rt.sessions() as s:
        rows = s.execute(select(D.c.id, D.c.patient_id, D.c.original_patient_id)
                         .where(D.c.patient_id.in_([uuid.UUID(p) for p in pids]))).all()
    out: dict[str, list[str]] = {p: [] for p in pids}
    for r in rows:
        out[str(r.patient_id)].append(str(r.id))
    return out


def _merge_open_then(rt, world, survivor: str, merged: str, work, who: str | None = "clinic_a") -> Worker:
    """Merge `merged` into `survivor` in an open transaction, start `work` on another connection,
    wait until it is blocked, commit the merge, and return the finished worker."""
    with rt.sessions.begin() as s:
        merging.merge(_ctx(s, rt, world, "steward_district"),
                      MergeRequest(survivor_id=uuid.UUID(survivor), merged_id=uuid.UUID(merged)))
        worker = Worker(rt, world, who, work)
        worker.start()
        _wait_until_blocked(rt, worker)
    worker.join(120)
    assert not worker.is_alive()
    return worker


@pytest.fixture
def pair(world):
    return world.register("clinic_a")["id"], world.register("clinic_a")["id"]


def test_merge_first_then_a_single_dose_is_refused_naming_the_survivor(world, runtime, pair):
    s, m = pair
    worker = _merge_open_then(runtime, world, s, m, lambda ctx: doses.record(ctx, uuid.UUID(m), _bcg()))
    assert isinstance(worker.error, Merged) and worker.error.merged_into == uuid.UUID(s)
    assert _owners(runtime, [s, m]) == {s: [], m: []}


def test_merge_first_then_a_batch_dose_is_refused(world, runtime, pair):
    """The set-based path that sync batches and FHIR transaction bundles use."""
    s, m = pair

    def work(ctx):
        plan = dose_batch.plan(ctx, [(uuid.UUID(m), _bcg())])
        dose_batch.write(ctx, plan)
        return plan

    worker = _merge_open_then(runtime, world, s, m, work)
    assert worker.error is None
    [outcome] = worker.result.outcomes
    assert isinstance(outcome, Merged) and outcome.merged_into == uuid.UUID(s)
    assert _owners(runtime, [s, m]) == {s: [], m: []}


def test_merge_first_then_an_imported_dose_is_rejected(world, runtime, pair, tmp_path):
    s, m = pair
    path = tmp_path / "doses.csv"
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, list(sources.DOSE_COLUMNS))
        w.writeheader()
        w.writerow({"id": "", "patient_id": m, "vaccine": "BCG", "dose_number": "1", "date_given": "2026-06-02"})
    worker = _merge_open_then(runtime, world, s, m, who=None,  # the import opens its own transactions
                              work=lambda: importer.run(runtime, path, username=world.users["clinic_a"], chunk_size=10))
    assert worker.error is None
    res = worker.result
    assert (res.imported, res.rejected) == (0, 1)
    report = tmp_path / "errors.csv"
    importer.write_error_report(runtime, res.run_id, report)
    assert [(r["field"], r["reason"]) for r in csv.DictReader(open(report))] == [("patient_id", "merged_patient")]
    assert _owners(runtime, [s, m]) == {s: [], m: []}


def test_sync_batch_rejection_names_the_survivor(world, pair):
    s, m = pair
    merge(world, s, m)
    item = {"op": "dose.record", "patient_id": m,
            "data": {"id": str(uuid.uuid4()), "vaccine": "BCG", "dose_number": 1, "date_given": "2026-06-02"}}
    r = world.client.post("/api/v1/sync/batch", json={"items": [item]}, headers=world.h("clinic_a"))
    assert r.status_code == 200, r.json()
    [res] = r.json()["results"]
    assert (res["result"], res["code"], res["merged_into"]) == ("rejected", "merged", s)


def test_dose_first_then_the_merge_waits_and_moves_it(world, runtime, pair):
    s, m = pair
    with runtime.sessions.begin() as ds:
        view = doses.record(_ctx(ds, runtime, world, "clinic_a"), uuid.UUID(m), _bcg())
        worker = Worker(runtime, world, "steward_district",
                        lambda ctx: merging.merge(ctx, MergeRequest(survivor_id=uuid.UUID(s), merged_id=uuid.UUID(m))))
        worker.start()
        _wait_until_blocked(runtime, worker)
    worker.join(120)
    assert not worker.is_alive() and worker.error is None
    assert [str(d) for d in worker.result.moved_dose_ids] == [str(view.id)]
    assert _owners(runtime, [s, m]) == {s: [str(view.id)], m: []}
    with runtime.sessions() as x:
        assert x.execute(select(D.c.original_patient_id).where(D.c.id == view.id)).scalar_one() == uuid.UUID(m)
