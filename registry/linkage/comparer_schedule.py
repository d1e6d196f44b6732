"""The national comparer as a scheduled job of `nhr worker` (issue 13 item 7, docs/linkage.md
"Between provincial nodes"): on the node configured as the comparer (node certificate, key, CA
and peers file, no `NHR_NODE_PROVINCE`), `NHR_NODE_COMPARE_INTERVAL_SECONDS` > 0 runs
node_comparer.run (pull, compare, push, as `nhr dedupe cross-province --nodes`) on that interval.

Invariants:
- One comparer run at a time, across processes and hosts: the run holds the comparer's run lock
  (run_lock.py, the key `comparer`); a second worker, or the command run by hand meanwhile, skips.
- A node that fails is reported unreachable and skipped by the run (node_comparer.run), the others
  proceed; its pairs and withdrawals wait for the next run. A run that fails as a whole is logged
  by exception class only and retried on the next tick (periodic.py).
- The transport (mutual TLS) is injected by the caller (cli/worker.py): the domain knows nothing of HTTP.
"""

from __future__ import annotations

import asyncio
import logging

from registry import periodic
from registry.linkage import node_comparer, run_lock
from registry.nodes.federation import Transport
from registry.settings import Settings

log = logging.getLogger("nhr.linkage.comparer")
LOCK = "comparer"


def configured(settings: Settings) -> bool:
    """Whether this process is the comparer with a schedule."""
    node = settings.node
    return (node.compare_interval_seconds > 0 and node.province is None
            and all((node.tls_cert, node.tls_key, node.tls_ca, node.peers_file)))


def run_once(rt, comparer: node_comparer.Comparer) -> node_comparer.RunReport | None:
    """One comparer run unless another holds the lock (None then)."""
    with run_lock.exclusive(rt, LOCK) as held:
        if not held:
            return None
        report = asyncio.run(node_comparer.run(rt, comparer))
    log.info("scheduled linkage comparison: %d records pulled, %d compared, %d new pairs, %d re-scored, "
             "%d withdrawn, %d nodes not reached", sum(report.pulled.values()), report.compared, report.found,
             report.rescored, report.withdrawn, len(set(report.unreachable)))
    return report


def start_background(rt, transport: Transport | None) -> asyncio.Task | None:
    if transport is None or not configured(rt.settings):
        return None
    comparer = node_comparer.Comparer.from_settings(rt.settings, transport)
    return periodic.start("nhr-node-compare", rt.settings.node.compare_interval_seconds,
                          lambda tick: run_once(rt, comparer), log, "scheduled linkage comparison")


async def stop_background(task: asyncio.Task | None) -> None:
    await periodic.stop(task)
