"""The work behind the request path, in a process of its own (`nhr worker`, issue 17).

The audit sealer (registry/audit_log/sealing.py) and the coverage refresher
(registry/reports/background.py) run here on their usual intervals, and the scheduled batch
deduplication of each province (registry/linkage/schedule.py, NHR_DEDUPE_INTERVAL_HOURS; only
here, never in the API's process: it is minutes of CPU), and on the national linkage comparer its
runs (registry/linkage/comparer_schedule.py, NHR_NODE_COMPARE_INTERVAL_SECONDS); on a province node
serving it, the re-encoding of its records (registry/linkage/encode_schedule.py,
NHR_NODE_ENCODE_INTERVAL_SECONDS); and the refill of the node's pool of ready access codes
(registry/citizens/code_pool.py, NHR_CITIZEN_CODE_POOL_SIZE). In production the API's
workers leave them to this process (`NHR_IN_PROCESS_WORKER`, off in production by default), so a
request never shares its worker's CPU with a seal or a refresh; in development and tests the API
runs them itself, so the demo seals with nothing else started.

Invariants:
- The loops may run in several processes or hosts at once: the sealer's lock, the
  refresher's advisory lock and the dedupe run lock let one work at a time, so a second worker
  is harmless.
- `run` returns once `stop` is set (SIGTERM or SIGINT in `nhr worker`), after the loops have
  stopped and any seal or refresh in progress has finished its transaction: a stop never leaves
  half a seal, since each seal is one transaction.
"""

from __future__ import annotations

import asyncio
import logging

from registry.audit_log import sealing
from registry.citizens import code_pool
from registry.linkage import comparer_schedule, encode_schedule
from registry.linkage import schedule as dedupe_schedule
from registry.nodes.federation import Transport
from registry.reports import background as report_refresher
from registry.runtime import Runtime

log = logging.getLogger("nhr.worker")


async def run(rt: Runtime, stop: asyncio.Event, comparer_transport: Transport | None = None) -> None:
    """Seal and refresh until `stop` is set (and, on the national comparer given its transport,
    compare the provincial nodes' encodings every NHR_NODE_COMPARE_INTERVAL_SECONDS)."""
    sealer = sealing.start_background(rt)
    refresher = report_refresher.start_background(rt)
    deduper = dedupe_schedule.start_background(rt)
    comparer = comparer_schedule.start_background(rt, comparer_transport)
    encoder = encode_schedule.start_background(rt)
    code_refill = code_pool.start_background(rt)
    log.info("worker started (sealer every %s s, refresher every %s s, dedupe every %s h)",
             rt.settings.audit.seal_interval_seconds, rt.settings.reports.refresh_interval_seconds,
             rt.settings.dedupe_interval_hours)
    if comparer is not None:
        log.info("linkage comparer scheduled every %s s", rt.settings.node.compare_interval_seconds)
    try:
        await stop.wait()
    finally:
        await code_pool.stop_background(code_refill)
        await comparer_schedule.stop_background(comparer)
        await encode_schedule.stop_background(encoder)
        await dedupe_schedule.stop_background(deduper)
        await report_refresher.stop_background(refresher)
        await sealing.stop_background(sealer)
        log.info("worker stopped")
