"""Scheduled batch deduplication in `nhr worker` (issue 13): the worker's schedule starts a run of
each province, audited as the CLI run is (`detail.trigger: schedule`); a province is run by one
runner at a time (PostgreSQL advisory lock / a file lock on SQLite: registry/linkage/run_lock.py),
so two workers never both run it, a CLI run refuses while one is in progress, and a stopping
worker leaves a run to resume. Real worker loop, real database; values compared, never printed."""

from __future__ import annotations

import asyncio
import threading
import time
import uuid
from datetime import UTC, datetime, timedelta

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from api.app import create_app
from registry import bootstrap, worker
from registry.linkage import dedupe, run_lock, schedule
from registry.linkage.match_models import DedupeRun
from registry.linkage.models import LinkCandidate
from registry.runtime import Runtime
from tests.conftest import audit_events, build_world, drop_database, fresh_database_url, make_settings, unique_nadra

DEADLINE = 180  # seconds for a run on a loaded machine; a bound, not a timing assertion


@pytest.fixture(scope="module")
def fresh(tmp_path_factory):
    """A database of its own: no run has ever finished, so every province is due."""
    tmp = tmp_path_factory.mktemp("dedupe-schedule")
    url = fresh_database_url(tmp, "dedupesched")
    rt = Runtime.build(make_settings(url, tmp / "keyring"))
    bootstrap.init(rt)
    client = TestClient(create_app(rt.settings, rt))
    w = build_world(client, rt)
    yield rt, w
    rt.engine.dispose()
    drop_database(url)


def _twins(w) -> tuple[str, str]:
    """Two records of one child (the second registered with confirmation), their pair forgotten,
    so that only a dedupe run can propose it again."""
    body = {"given_name": "Muhammad", "family_name": f"Qizil{uuid.uuid4().hex[:6]}", "sex": "male", "birth_date": "2026-03-07",
            "guardian": {"name": "Mehrun Bibi", "relationship": "mother", "cnic": unique_nadra()}}
    a = w.client.post("/api/v1/patients", json=body, headers=w.h("clinic_a")).json()["id"]
    b = w.client.post("/api/v1/patients", json={**body, "given_name": "Mohammad", "birth_date": "2026-07-03",
                                                  "confirm_not_duplicate": True}, headers=w.h("clinic_a")).json()["id"]
    t = LinkCandidate.__table__
    with w.runtime.sessions.begin() as s:
        s.execute(t.delete())
    return a, b


def _runs(rt, province: str | None = None) -> list:
    q = select(DedupeRun.__table__)
    if province:
        q = q.where(DedupeRun.province == province)
    with rt.sessions() as s:
        return list(s.execute(q))


def _pair_source(rt, a: str, b: str) -> str | None:
    t = LinkCandidate.__table__
    left, right = sorted((uuid.UUID(a), uuid.UUID(b)), key=str)
    with rt.sessions() as s:
        return s.execute(select(t.c.source).where(t.c.left_id == left, t.c.right_id == right)).scalar()


def test_the_worker_schedule_runs_each_province_once_and_audits_it(fresh):
    rt, w = fresh
    a, b = _twins(w)
    provinces = schedule.provinces(rt)
    assert "PK-PB" in provinces and len(provinces) >= 2

    async def main() -> None:
        stop = asyncio.Event()
        task = asyncio.create_task(worker.run(rt, stop))
        end = time.monotonic() + DEADLINE
        while time.monotonic() < end and {r.province for r in _runs(rt) if r.status == "done"} != set(provinces):
            await asyncio.sleep(0.2)
        stop.set()
        await task

    asyncio.run(main())
    runs = _runs(rt)
    assert sorted(r.province for r in runs) == provinces and all(r.status == "done" for r in runs)
    assert _pair_source(rt, a, b) == "dedupe"  # the schedule found the twins
    events = [e for e in audit_events(rt, action="linkage.dedupe") if e.detail.get("trigger") == "schedule"]
    assert sorted(e.detail["province"] for e in events) == provinces
    assert all(e.client_address.startswith("system:") and e.actor_user_id is None for e in events)  # the system actor

    # not due again within the interval: a second pass (another worker, a restart) runs nothing
    assert schedule.run_due(rt) == {}
    assert len(_runs(rt)) == len(provinces)


def test_two_runners_never_run_a_province_at_once(fresh):
    rt, w = fresh
    soon = rt.settings.model_copy(update={"dedupe_interval_hours": 1e-9})  # every province due again
    due_rt = _with_settings(rt, soon)
    before = len(_runs(rt, "PK-PB"))

    # another runner (a worker, or `nhr dedupe run`) holds PK-PB: the schedule skips it, the CLI refuses
    with run_lock.exclusive(rt, "PK-PB") as held:
        assert held
        with run_lock.exclusive(rt, "PK-PB") as second:
            assert not second
        done = schedule.run_due(due_rt)
        assert "PK-PB" not in done
        with pytest.raises(dedupe.RunInProgress):
            dedupe.run(rt, "PK-PB")
    assert len(_runs(rt, "PK-PB")) == before

    # two workers' schedules at the same moment, every province due (its last run two days old,
    # the interval 24 h): each province is run exactly once, by one of them
    with rt.sessions.begin() as s:
        s.execute(DedupeRun.__table__.update().values(finished_at=datetime.now(UTC) - timedelta(days=2)))
    before = {p: len(_runs(rt, p)) for p in schedule.provinces(rt)}
    start = threading.Barrier(2)
    results: list[dict] = []

    def one_worker() -> None:
        start.wait()
        results.append(schedule.run_due(rt))

    threads = [threading.Thread(target=one_worker) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(DEADLINE)
    assert len(results) == 2
    ran = [p for r in results for p in r]
    assert sorted(ran) == sorted(before), "a province was run twice, or not at all"
    assert {p: len(_runs(rt, p)) for p in before} == {p: n + 1 for p, n in before.items()}


def test_a_stopping_worker_leaves_the_run_to_resume(fresh):
    rt, w = fresh
    due_rt = _with_settings(rt, rt.settings.model_copy(update={"dedupe_interval_hours": 1e-9}))
    stopped = dedupe.run_if_due(due_rt, "PK-PB", timedelta(hours=1e-9), should_stop=lambda: True)
    assert stopped is not None
    [open_run] = [r for r in _runs(rt, "PK-PB") if r.status == "running"]
    assert len(open_run.blocks_done) == 1  # one unit committed, then it stopped
    resumed = dedupe.run_if_due(due_rt, "PK-PB", timedelta(hours=1e-9))
    assert resumed is not None and resumed.resumed and resumed.run_id == open_run.id
    assert [r.status for r in _runs(rt, "PK-PB") if r.id == open_run.id] == ["done"]


def _with_settings(rt: Runtime, settings):
    """The same runtime (engine, keys) seen with other settings."""
    class View:
        def __getattr__(self, name):
            return getattr(rt, name)

    v = View()
    v.settings = settings
    return v
