"""The sealer's memory does not follow its backlog (issue 17): a seal streams the unsealed events
a chunk at a time (security/audit/sealer.py), so `nhr worker` sealing a bulk load or a restore
holds one chunk, not the batch. Measured by tracemalloc (allocations, not time), on the database
under test."""

from __future__ import annotations

import tracemalloc

from sqlalchemy import func, select

from registry.audit_log import sealing
from security.audit import sealer
from security.audit.sealer import CHECKPOINTS, LEAVES
from tests.test_audit_sealing import _insert_events


def _sealed_with_peak(rt) -> tuple[sealer.SealResult | None, int]:
    """One full seal and its peak Python allocations, in bytes."""
    tracemalloc.start()
    try:
        result = sealing.seal_once(rt, full=True)
        return result, tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_a_seal_holds_a_chunk_of_its_backlog_not_the_backlog(runtime, monkeypatch):
    monkeypatch.setattr(sealer, "_CHUNK", 50)
    _insert_events(runtime, 60)
    sealing.seal_all(runtime)  # statement caches and the key are warm before measuring
    with runtime.sessions() as s:
        checkpoints = s.execute(select(func.count()).select_from(CHECKPOINTS)).scalar_one()

    _insert_events(runtime, 200)
    small, small_peak = _sealed_with_peak(runtime)
    _insert_events(runtime, 2000)
    large, large_peak = _sealed_with_peak(runtime)

    # one transaction and one checkpoint a seal, as before: only the memory changed
    assert small is not None and small.sealed == 200 and not small.quarantined
    assert large is not None and large.sealed == 2000 and not large.quarantined
    with runtime.sessions() as s:
        assert s.execute(select(func.count()).select_from(CHECKPOINTS)).scalar_one() == checkpoints + 2
        positions = s.execute(select(LEAVES.c.position).order_by(LEAVES.c.position)).scalars().all()
    assert positions == list(range(len(positions)))
    sealing.verify_database(runtime)
    # ten times the backlog: holding the batch took about ten times the memory
    assert large_peak < 2 * small_peak, (small_peak, large_peak)
