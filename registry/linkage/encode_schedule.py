"""Scheduled re-encoding on a province node that serves the national comparer (issue 13 item 7,
docs/linkage.md "Between provincial nodes"): with `NHR_NODE_COMPARER` set and
`NHR_NODE_ENCODE_INTERVAL_SECONDS` > 0, `nhr worker` runs `nhr dedupe encode` for each province
whose keys this process holds, on that interval, so that an unmerge or a changed name or birth
date reaches the comparer's next pull without anyone running the command. (A merge needs no
re-encoding: it takes the merged record out of the feed at once, node_feed.forget.)

Invariants:
- One encoder of a province at a time from the schedule (run_lock.py, the key `encode-<province>`);
  the feed stays correct even if the command runs meanwhile (node_feed.py: positions under a lock).
- An unchanged encoding keeps its row and position: a run that finds nothing changed adds nothing
  to the feed. Failures (the secret missing, a database error) are logged by exception class only
  and retried on the next tick (periodic.py).
"""

from __future__ import annotations

import asyncio
import logging

from registry import periodic
from registry.linkage import cross_province, run_lock
from registry.linkage import schedule as dedupe_schedule
from registry.settings import Settings

log = logging.getLogger("nhr.linkage.encode")


def configured(settings: Settings) -> bool:
    node = settings.node
    return node.encode_interval_seconds > 0 and node.comparer is not None


def run_once(rt) -> dict[str, int]:
    """Re-encode each province this process holds keys of and no other encoder is running; records encoded, by province."""
    done = {}
    for province in dedupe_schedule.provinces(rt):
        with run_lock.exclusive(rt, f"encode-{province}") as held:
            if held:
                done[province] = cross_province.encode_province(rt, province)
                log.info("scheduled linkage encoding of %s: %d records", province, done[province])
    return done


def start_background(rt) -> asyncio.Task | None:
    if not configured(rt.settings):
        return None
    return periodic.start("nhr-linkage-encode", rt.settings.node.encode_interval_seconds, lambda tick: run_once(rt),
                          log, "scheduled linkage encoding")


async def stop_background(task: asyncio.Task | None) -> None:
    await periodic.stop(task)
