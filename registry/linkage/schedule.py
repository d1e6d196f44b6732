"""Scheduled batch deduplication in `nhr worker` (issue 13): every province whose keys this
process holds is deduplicated once per `NHR_DEDUPE_INTERVAL_HOURS` (0: never).

Invariants:
- Whether a run is due is read from `dedupe_runs` (an unfinished run is resumed at once; else a
  run is due when none finished within the interval), so a restarted worker neither repeats a
  recent run nor forgets one, and the schedule needs no state of its own.
- The check and the run happen under the province's dedupe lock (run_lock.py): several workers
  may run the schedule; one deduplicates a province, the others skip it. A CLI run in progress
  is skipped the same way.
- The run is `dedupe.run`'s: resumable, idempotent, one `linkage.dedupe` audit event by the
  system actor (`detail.trigger: schedule`). Failures are logged by exception class only.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from datetime import timedelta

from sqlalchemy import select

from registry import periodic
from registry.linkage import dedupe
from registry.jurisdictions.models import Jurisdiction

log = logging.getLogger("nhr.linkage.schedule")
CHECK_SECONDS = 300.0  # how often the worker asks whether a province is due (a cheap query)


def provinces(rt) -> list[str]:
    """The custodian provinces this process holds keys of (a provincial node: its own)."""
    with rt.sessions() as s:
        known = set(s.scalars(select(Jurisdiction.code).where(Jurisdiction.level == "province")))
    return sorted(known & rt.keys.custodians())


def run_due(rt, stopping: threading.Event | None = None) -> dict[str, dedupe.Summary]:
    """Run every province that is due and not being run elsewhere; the runs done, by province.
    `stopping` set: the run in progress ends after its current blocking unit (resumed later)."""
    interval = timedelta(hours=rt.settings.dedupe_interval_hours)
    done = {}
    for province in provinces(rt):
        if stopping is not None and stopping.is_set():
            break
        summary = dedupe.run_if_due(rt, province, interval, stopping.is_set if stopping is not None else None)
        if summary is not None:
            done[province] = summary
            log.info("scheduled dedupe of %s: %d records, %d pairs scored, %d new candidates (run %s)", province,
                     summary.records, summary.pairs_scored, summary.proposed, summary.run_id)
    return done


_stopping: dict[asyncio.Task, threading.Event] = {}


def start_background(rt) -> asyncio.Task | None:
    hours = rt.settings.dedupe_interval_hours
    if hours <= 0:
        return None
    stopping = threading.Event()
    task = periodic.start("nhr-dedupe-schedule", min(CHECK_SECONDS, hours * 3600), lambda tick: run_due(rt, stopping),
                          log, "scheduled deduplication")
    _stopping[task] = stopping
    return task


async def stop_background(task: asyncio.Task | None) -> None:
    """Stop the schedule; a run in progress ends after its current blocking unit, committed, and
    resumes on the next run (asyncio.run waits for the worker thread before the process exits)."""
    if task is None:
        return
    _stopping.pop(task).set()
    await periodic.stop(task)
