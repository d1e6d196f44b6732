"""Keeping the coverage aggregates current behind the request path, like the audit sealer.

Invariants:
- An asyncio task folds queued patient changes into the aggregates in a worker thread every
  `report_refresh_interval_seconds` (0 disables it; reports still refresh before answering).
  Several workers or hosts may run it: the refresher's advisory lock lets one work at a time.
- A failure is logged by exception class only (no data) and retried on the next tick.
"""

from __future__ import annotations

import asyncio
import logging

from registry.clock import local_today
from registry.reports import aggregate
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


async def _loop(rt: Runtime, interval: float) -> None:
    while True:
        try:
            await asyncio.to_thread(refresh_all, rt)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # logged by class only: messages could carry data
            log.warning("coverage aggregate refresh failed (%s); retrying next tick", type(exc).__name__)
        await asyncio.sleep(interval)


def start_background(rt: Runtime) -> asyncio.Task | None:
    interval = rt.settings.report_refresh_interval_seconds
    return asyncio.create_task(_loop(rt, interval), name="nhr-report-refresher") if interval > 0 else None


async def stop_background(task: asyncio.Task | None) -> None:
    if task is None:
        return
    task.cancel()
    try:
        await task
    except asyncio.CancelledError:
        pass
