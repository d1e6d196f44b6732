"""Batch deduplication of a custodian province (`nhr dedupe run --province PK-PB`).

Runs in the custodian's process with its keys: the province's records are decrypted and
prepared in memory (page by page), blocked (blocking.py), scored with the active model, and
every pair graded at least `possible` is proposed to the review queue (source `dedupe`).

- Resumable: the run and the blocking units it finished are in `dedupe_runs`; each unit's
  proposals and the checkpoint commit together, so a rerun after an interruption continues
  with the next unit.
- Idempotent: `propose` inserts a pair once, refreshes an open pair, and never reopens a decided
  one, so running again proposes nothing new.
- Audited as a system action: one `linkage.dedupe` event per run (counts and the run id only).
- One runner per province at a time (registry/linkage/run_lock.py): a second `run` while one is
  in progress raises RunInProgress at once and changes nothing; `run_if_due` (the schedule in
  `nhr worker`) skips the province instead.
- Blocking keys for the registration check (link_keys) are written for records that lack them
  (records loaded by the demo generator or before this feature).
"""

from __future__ import annotations

import gc
import getpass
import threading
import uuid
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Callable

from registry.errors import Conflict
from registry.linkage import blocking, comparisons, population_model, records, run_lock
from registry.linkage import repository as repo
from registry.linkage.scoring import Model, scored_from_vector, term_frequency_headroom
from registry.linkage.service import active_model
from security.access.principal import AccessContext
from security.audit import trail as audit
from security.audit.trail import AuditTrail

ACTION = "linkage.dedupe"
PAGE = 5000
READ_PAGE = 20000  # rows a page when reading the province (the compared columns only)


class RunInProgress(Conflict):
    """Another process is deduplicating this province now."""

    code = "dedupe_in_progress"


@dataclass
class Progress:
    phase: str          # "reading" | "scoring"
    done: int
    total: int
    pairs: int = 0
    proposed: int = 0


@dataclass
class Summary:
    run_id: uuid.UUID
    records: int
    pairs_scored: int
    proposed: int
    resumed: bool
    keys_written: int


def _trail(run_id: uuid.UUID) -> AuditTrail:
    return AuditTrail(AccessContext(None, "HOPERAT", f"dedupe-{run_id.hex[:12]}", f"system:{getpass.getuser()}"))


def load(rt, province: str, on_progress: Callable[[Progress], None] | None = None,
         workers: int = 1) -> tuple[list[dict], list[uuid.UUID], int]:
    """The province's records, prepared, in id order; their ids; blocking-key rows written for
    those lacking them. `workers` > 1 reads, decrypts and prepares that many ranges of ids in
    forked processes (decryption and preparing are CPU; each process has its own connections)."""
    global _STATE
    if workers <= 1:
        return _load_range(rt, province, None, None, on_progress)
    import multiprocessing

    bounds = [None, *(uuid.UUID(int=k * 2**128 // workers) for k in range(1, workers)), None]
    ranges = list(zip(bounds[:-1], bounds[1:]))
    recs, ids, written = [], [], 0
    rt.engine.dispose()  # no pooled connection crosses the fork
    with _FORKING:
        _STATE = (rt, province)
        try:
            with multiprocessing.get_context("fork").Pool(workers) as pool:
                for part_recs, part_ids, part_written in pool.imap(_load_part, ranges):
                    recs += part_recs
                    ids += part_ids
                    written += part_written
                    if on_progress:
                        on_progress(Progress("reading", len(recs), len(recs)))
        finally:
            _STATE = ()
    return recs, ids, written


def _load_part(bounds: tuple) -> tuple[list[dict], list[uuid.UUID], int]:
    rt, province = _STATE
    rt.engine.dispose(close=False)  # the parent's pool is not this process's
    return _load_range(rt, province, *bounds)


def _load_range(rt, province: str, after: uuid.UUID | None, before: uuid.UUID | None,
                on_progress: Callable[[Progress], None] | None = None) -> tuple[list[dict], list[uuid.UUID], int]:
    """`load` of the ids in (after, before) (None: unbounded), page by page."""
    recs, ids, written = [], [], 0
    while True:
        with rt.sessions.begin() as s:
            rows = repo.province_compared(s, province, records.COMPARED + records.ENCRYPTED, after=after,
                                          before=before, limit=READ_PAGE)
            if not rows:
                break
            new_keys = []
            for row in rows:
                rec = records.prepared_or_none(rt.cipher, row, records.from_compared)
                if rec is None:  # a damaged record (integrity failure, logged by id) is left out
                    continue
                recs.append(rec)
                ids.append(row.id)
                if not row[-1]:  # keyed
                    new_keys += records.key_rows(rt.indexer, row.custodian, row.id, rec)
            repo.insert_keys(s, new_keys)
            written += len(new_keys)
        after = rows[-1].id
        if on_progress:
            on_progress(Progress("reading", len(recs), len(recs)))
    return recs, ids, written


_STATE: tuple = ()  # what forked workers inherit: (runtime, province) to read, (records, blocking index, model) to score
_FORKING = threading.Lock()  # one forked run per process at a time (the state above is global)


def score_unit(unit: str, state: tuple | None = None) -> tuple[str, int, list]:
    """Score one blocking unit: (unit, pairs scored, [(i, j, Scored)] graded at least possible).
    `state`: (records, blocking index, model); in a forked worker, the inherited `_STATE`."""
    recs, idx, model = state or _STATE
    # the levels by one function, the weight by table lookups (scoring.score's result, the same
    # floats); a Scored is built only for the few pairs graded (at or above the lowest threshold)
    # (with the province's term frequencies, population_model.py, a pair within their headroom of
    # the lowest threshold is adjusted by its names before it is graded, as scoring.score does)
    vector, weight = comparisons.level_vector, model.vector_weight()
    floor = min(model.thresholds[g] for g in ("certain", "probable", "possible"))
    reach = floor - term_frequency_headroom(model)
    n, graded = 0, []
    for i, j in blocking.pairs(recs, idx, unit):
        n += 1
        v = vector(recs[i], recs[j])
        w = weight(v)
        if w >= reach:
            sc = scored_from_vector(model, v, w, recs[i])
            if sc.weight >= floor:
                graded.append((i, j, sc))
    return unit, n, graded


def _scored_units(todo: list[str], workers: int, state: tuple):
    """Units scored in order, in this process or in `workers` forked processes (units are
    independent; the records and the index are shared copy-on-write, nothing is sent back but
    indexes, scores and levels). Writing stays in this process. In this process the state is
    passed along, so runs of two provinces in two threads (the schedule, a test) never mix."""
    global _STATE
    if workers <= 1 or len(todo) < 2:
        yield from (score_unit(u, state) for u in todo)
        return
    import multiprocessing

    with _FORKING:
        _STATE = state
        try:
            with multiprocessing.get_context("fork").Pool(workers) as pool:
                yield from pool.imap(score_unit, todo)
        finally:
            _STATE = ()


def run(rt, province: str, *, on_progress: Callable[[Progress], None] | None = None,
        model: Model | None = None, stop_after_units: int | None = None, workers: int = 1,
        trigger: str = "cli") -> Summary:
    """Deduplicate `province`, resuming its unfinished run if there is one.
    `stop_after_units` interrupts the run (for tests of resumption); `workers` > 1 reads the
    records and scores blocking units in that many forked processes. Raises RunInProgress if another runner holds
    the province (run_lock.py)."""
    with run_lock.exclusive(rt, province) as held:
        if not held:
            raise RunInProgress(f"a deduplication of {province} is in progress elsewhere")
        return _run(rt, province, on_progress=on_progress, model=model, stop_after_units=stop_after_units,
                    workers=workers, trigger=trigger)


def due(session, province: str, interval: timedelta, now: datetime | None = None) -> bool:
    """Whether a scheduled run of `province` is due: an unfinished run waits to be resumed, or
    no run finished within `interval`."""
    if repo.open_run(session, province) is not None:
        return True
    finished = repo.last_finished(session, province)
    return finished is None or finished + interval <= (now or datetime.now(UTC))


def run_if_due(rt, province: str, interval: timedelta, should_stop: Callable[[], bool] | None = None) -> Summary | None:
    """The scheduled run (`nhr worker`): under the province's lock, run (or resume) if `due`;
    None if another runner holds the province or the last run is recent. Checking under the lock
    means two workers never both run it: the second finds it busy, or finds it just done.
    `should_stop` (the worker stopping) ends the run after the unit in progress, left to resume."""
    with run_lock.exclusive(rt, province) as held:
        if not held:
            return None
        with rt.sessions() as s:
            if not due(s, province, interval):
                return None
        return _run(rt, province, trigger="schedule", should_stop=should_stop)


def _run(rt, province: str, *, on_progress: Callable[[Progress], None] | None = None,
         model: Model | None = None, stop_after_units: int | None = None, workers: int = 1,
         trigger: str = "cli", should_stop: Callable[[], bool] | None = None) -> Summary:
    with rt.sessions.begin() as s:
        model = model or active_model(s)
        existing = repo.open_run(s, province)
        units = blocking.units()
        if existing is not None:
            run_id, done, pairs, proposed, resumed = existing.id, list(existing.blocks_done), existing.pairs_scored, \
                existing.proposed, True
        else:
            run_id, done, pairs, proposed, resumed = repo.start_run(s, province, model.version, len(units)), [], 0, 0, False
    with _long_lived() as built:
        recs, ids, written = load(rt, province, on_progress, workers)
        model = population_model.for_records(model, recs)  # the province's size and names (provincef1)
        state = (recs, blocking.index(recs), model)
        built()
        return _score_and_propose(rt, province, run_id, units, done, pairs, proposed, resumed, model, state, ids, written,
                                  on_progress=on_progress, stop_after_units=stop_after_units, workers=workers,
                                  trigger=trigger, should_stop=should_stop)


@contextmanager
def _long_lived():
    """A run's prepared records and blocking index (millions of objects for a large province)
    live until it ends: the cyclic GC is off while they are built, then they are frozen out of
    it (`gc.freeze`), so full collections stop rescanning them and forked scorers stop copying
    their pages by touching GC headers. Restored at the end."""
    enabled = gc.isenabled()

    def built() -> None:
        gc.freeze()
        if enabled:
            gc.enable()

    gc.disable()
    try:
        yield built
    finally:
        gc.unfreeze()
        if enabled:
            gc.enable()


def _score_and_propose(rt, province, run_id, units, done, pairs, proposed, resumed, model, state, ids, written, *,
                       on_progress, stop_after_units, workers, trigger, should_stop) -> Summary:
    recs = state[0]
    todo = [u for u in units if u not in set(done)]
    if stop_after_units is not None:
        todo_now = todo[:stop_after_units]
    else:
        todo_now = todo
    for n, (unit, n_pairs, graded) in enumerate(_scored_units(todo_now, workers, state)):
        with rt.sessions.begin() as s:
            pairs += n_pairs
            proposed += repo.propose_many(s, [(ids[i], ids[j], sc) for i, j, sc in graded],
                                          model_version=model.version, source="dedupe")
            done.append(unit)
            last = len(done) == len(units)
            repo.checkpoint(s, run_id, done, pairs, proposed, done=last)
            if last:
                _audit(s, run_id, province, model, len(recs), pairs, proposed, resumed, trigger)
        if on_progress:
            on_progress(Progress("scoring", len(done), len(units), pairs, proposed))
        if should_stop is not None and should_stop():
            break  # the unit's proposals and checkpoint are committed: the next run resumes here
    if not todo:  # nothing left: close the run
        with rt.sessions.begin() as s:
            repo.checkpoint(s, run_id, done, pairs, proposed, done=True)
            _audit(s, run_id, province, model, len(recs), pairs, proposed, resumed, trigger)
    return Summary(run_id, len(recs), pairs, proposed, resumed, written)


def _audit(s, run_id, province, model, n_records, pairs, proposed, resumed, trigger) -> None:
    _trail(run_id).record(s, ACTION, audit.SUCCESS, resource_type="LinkCandidate", resource_id=run_id,
                          detail={"province": province, "model_version": model.version, "records": n_records,
                                  "pairs_scored": pairs, "proposed": proposed, "resumed": resumed, "trigger": trigger})
