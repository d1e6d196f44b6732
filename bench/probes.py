"""The audit sealing lag under load (DESIGN.md section 6: the unsealed tail stays under 5 s at
full load), sampled from the database while a workload runs.

Every `interval` seconds a thread asks PostgreSQL for the age of the oldest committed audit
event that has no Merkle leaf yet (`audit_log_leaves`), among the events written since the probe
started (the loaded population's events are sealed before the servers start; see
`population.seal_loaded_events`). An event is only visible once its request committed, so the
age is measured from its `occurred_at` (set during the request) to the sample: the lag a
verifier would see. The registry's own background sealer (`NHR_AUDIT_SEAL_INTERVAL_SECONDS`,
default 2 s) does the sealing; nothing here seals. Reads counts and timestamps only.
"""

from __future__ import annotations

import statistics
import threading
from datetime import UTC, datetime

import psycopg

_OLDEST_UNSEALED = (
    "SELECT COALESCE(EXTRACT(EPOCH FROM clock_timestamp() - min(e.occurred_at)), 0), count(*) FROM audit_events e "
    "WHERE e.occurred_at >= %s AND NOT EXISTS (SELECT 1 FROM audit_log_leaves l WHERE l.event_id = e.id)")


class SealingLag:
    """`with SealingLag(url) as probe: ...run a workload...`, then `probe.result()`."""

    def __init__(self, url: str, interval: float = 0.25) -> None:
        self.url, self.interval = url, interval
        self.samples: list[float] = []    # seconds: age of the oldest unsealed event
        self.pending: list[int] = []      # unsealed events at each sample
        self.failures = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def __enter__(self) -> SealingLag:
        self.since = datetime.now(UTC)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(10)

    def _loop(self) -> None:
        with psycopg.connect(self.url, autocommit=True) as c:
            while not self._stop.wait(self.interval):
                try:
                    age, n = c.execute(_OLDEST_UNSEALED, [self.since]).fetchone()
                except psycopg.Error:
                    self.failures += 1
                    continue
                self.samples.append(float(age))
                self.pending.append(int(n))

    def result(self) -> dict:
        """In the table's shape: p50 and p99 columns hold the median and the largest sampled lag."""
        s = self.samples or [0.0]
        return {"rate": 0.0, "unit": "seconds of lag", "requests": len(self.samples), "seconds": len(s) * self.interval,
                "p50_ms": statistics.median(s) * 1000, "p99_ms": max(s) * 1000, "max_pending_events": max(self.pending or [0]),
                "non2xx": 0, "errors": self.failures}
