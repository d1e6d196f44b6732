"""`nhr worker`: the audit sealer and the coverage refresher as a process of their own
(registry/worker.py). SIGTERM or SIGINT stops it cleanly (exit 0) once a seal in progress is done."""

from __future__ import annotations

import asyncio
import logging
import signal

from rich.console import Console

console = Console(stderr=True)


def worker():
    """Seal the audit log and refresh the coverage aggregates until stopped (SIGTERM or Ctrl-C).

    Run one beside the API when the API's in-process worker is off (NHR_IN_PROCESS_WORKER; off in
    production by default). Intervals: NHR_AUDIT_SEAL_INTERVAL_SECONDS, NHR_REPORT_REFRESH_INTERVAL_SECONDS."""
    from registry import worker as background
    from registry.runtime import Runtime
    from registry.settings import get_settings

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    rt = Runtime.build(get_settings())
    rt.load_keys()
    transport = None
    from registry.linkage import comparer_schedule

    if comparer_schedule.configured(rt.settings):  # the national linkage comparer (docs/linkage.md)
        from api.nodes.transport import MutualTlsTransport

        transport = MutualTlsTransport(rt.settings)

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await background.run(rt, stop, transport)

    try:
        asyncio.run(main())
    finally:
        rt.engine.dispose()
