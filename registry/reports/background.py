"""Keeping the coverage aggregates current behind the request path, like the audit sealer.

Invariants:
- An asyncio task folds queued patient changes into the aggregates in a worker thread every
  `settings.reports.refresh_interval_seconds` (0 disables it; reports still refresh before answering).
  Several workers or hosts may run it: the refresher's advisory lock lets one work at a time.
- A failure is logged by exception class only (no data) and retried on the next tick.
"""

from __future__ import annotations

import asyncio
import logging

from registry.clock import local_today
from registry.reports import aggregate
from registry import periodic
from registry.runtime import Runtime

log = logging.getLogger("nhr.reports.refresher")
BATCH = 5_000


def refresh_all(rt: Runtime) -> int:
    total = 0
    while True:
        with rt.sessions.begin() as s:
            done = aggregate.refresh(s, local_today(), BATCH)
        total += done
        if done < BATCH:
            return total


def start_background(rt: Runtime) -> asyncio.Task | None:
    return periodic.start("nhr-report-refresher", rt.settings.reports.refresh_interval_seconds,
                          lambda tick: refresh_all(rt), log, "coverage aggregate refresh")


stop_background = periodic.stop
