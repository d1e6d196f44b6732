"""Background work behind the request path (the audit sealer, the coverage refresher).

Invariants:
- The work runs in a worker thread every `interval` seconds; an interval of 0 starts nothing.
- A failure is logged by exception class only (messages could carry data) and retried on the
  next tick; cancelling the task (at shutdown) is the only way the loop ends.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Callable


async def _loop(work: Callable[[int], object], interval: float, log: logging.Logger, what: str) -> None:
    tick = 0
    while True:
        try:
            await asyncio.to_thread(work, tick)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.warning("%s failed (%s); retrying next tick", what, type(exc).__name__)
        tick += 1
        await asyncio.sleep(interval)


def start(name: str, interval: float, work: Callable[[int], object], log: logging.Logger, what: str) -> asyncio.Task | None:
    """Run `work(tick)` every `interval` seconds as the task `name`; None when interval is 0."""
    return asyncio.create_task(_loop(work, interval, log, what), name=name) if interval > 0 else None


async def stop(task: asyncio.Task | None) -> None:
    if task is None:
        return
    task.cancel()
    try:
        await task
    except asyncio.CancelledError:
        pass
