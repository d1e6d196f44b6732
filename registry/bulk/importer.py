"""`nhr import`: a file of patients or doses (CSV, FHIR NDJSON, FHIR Bundle), on behalf of a
named clinic account, in chunks that each commit on their own.

Invariants:
- Resumable: the run is keyed by (file SHA-256, facility). Each chunk's records, its audit event,
  its rejected rows and the run's `rows_done` commit in one transaction, so an interruption
  loses at most the chunk in flight, and a rerun continues after the last committed chunk.
- Nothing is created twice: ids are client ids or derived from (file hash, row), and every id is
  checked against the registry before insert.
- The importing account needs the same permissions as the API would ask for
  (`patient:create`, `immunization:record`) and must be bound to a facility; a refusal is audited.
"""

from __future__ import annotations

import gc
import getpass
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from itertools import islice
from pathlib import Path
from typing import Callable

from sqlalchemy import insert, select, update

from registry.bulk import chunk as chunks
from registry.bulk import sources
from registry.bulk.models import ImportRowError, ImportRun
from registry.errors import Conflict, Forbidden, InvalidInput
from registry.facilities.models import Facility
from registry.runtime import Runtime
from registry.users.models import User
from registry.users.service import principal_of
from security.access.permissions import Permission
from security.access.principal import AccessContext, resolve_purpose
from security.audit import trail as audit
from security.audit.trail import AuditTrail

RUNS, ERRORS = ImportRun.__table__, ImportRowError.__table__


@dataclass
class Progress:
    rows_done: int
    imported: int
    rejected: int
    chunk: int


@dataclass
class ImportResult:
    run_id: uuid.UUID
    file_format: str
    status: str
    resumed_from: int
    rows_done: int
    imported: int
    rejected: int


def _actor_trail(user: User, run_id: uuid.UUID, operator: str) -> AuditTrail:
    principal = principal_of(user)
    purpose = resolve_purpose(principal.role, None, None)
    return AuditTrail(AccessContext(principal, purpose, f"import-{run_id.hex}", f"cli:{operator}"[:64]))


def _refuse(rt: Runtime, trail: AuditTrail, message: str) -> None:
    with rt.sessions.begin() as s:
        trail.record(s, "bulk.import", audit.DENIED, resource_type="BulkImport", detail={"reason": "not a facility account with import rights"})
    raise Forbidden(message)


def start(rt: Runtime, path: Path, fmt: str | None, username: str, facility: str | None,
          chunk_size: int, operator: str | None = None) -> tuple[ImportRun, chunks.Actor, str]:
    """Find or create the run for this file and facility; check the importing account."""
    if chunk_size < 1:
        raise InvalidInput("chunk size must be at least 1", field="chunk_size")
    fmt = fmt or sources.detect(path)
    if fmt not in sources.FORMATS:
        raise InvalidInput(f"format must be one of {', '.join(sources.FORMATS)}", field="format")
    sha = sources.file_sha256(path)
    operator = operator or getpass.getuser()
    with rt.sessions.begin() as s:
        user = s.execute(select(User).where(User.username == username)).scalar_one_or_none()
        if user is None or not user.active:
            raise InvalidInput("no active staff account has this username", field="user")
        s.expunge(user)
    trail = _actor_trail(user, uuid.uuid4(), operator)
    p = trail.context.principal
    if p.facility is None or not (p.can(Permission.PATIENT_CREATE) and p.can(Permission.IMMUNIZATION_RECORD)):
        _refuse(rt, trail, "only a clinic account bound to a facility can import records")
    if facility is not None and facility != p.facility:
        _refuse(rt, trail, "the account is bound to another facility")
    now = datetime.now(UTC)
    with rt.sessions.begin() as s:
        fac = s.get(Facility, p.facility)
        run = s.execute(select(ImportRun).where(ImportRun.file_sha256 == sha, ImportRun.facility == p.facility)).scalar_one_or_none()
        if run is None:
            run = ImportRun(id=uuid.uuid4(), file_sha256=sha, file_format=fmt, facility=p.facility, custodian=fac.province,
                            user_id=p.user_id, username=p.username, operator=operator[:64], chunk_size=chunk_size,
                            status="running", rows_done=0, imported=0, rejected=0, started_at=now, updated_at=now)
            s.add(run)
            s.flush()
        s.expunge(run)
    trail = _actor_trail(user, run.id, operator)
    return run, chunks.Actor(trail, p.facility, fac.province, fac.district, run.id), sha


def run(rt: Runtime, path: Path, *, username: str, fmt: str | None = None, facility: str | None = None,
        chunk_size: int = 5000, operator: str | None = None, workers: int = 1,
        on_chunk: Callable[[Progress], None] | None = None) -> ImportResult:
    """Import `path` (or continue its run). `on_chunk` is called after each committed chunk.
    `workers` > 1 validates FHIR resources in that many processes (fhir.resources is the cost)."""
    rt.load_keys()
    run_row, actor, sha = start(rt, path, fmt, username, facility, chunk_size, operator)
    resumed_from = run_row.rows_done
    done, imported, rejected = run_row.rows_done, run_row.imported, run_row.rejected
    if run_row.status != "completed":
        stream = (it for it in sources.items(path, sha, run_row.file_format) if it.row > resumed_from)
        pool = _pool(workers) if workers > 1 and run_row.file_format.startswith("fhir") else None
        # Rows are freed by reference counting; the cyclic collector would only rescan the
        # chunk's many short-lived objects again and again, so it pauses during the import.
        collecting = gc.isenabled()
        gc.disable()
        try:
            n = 0
            while batch := list(islice(stream, chunk_size)):
                n += 1
                if pool is not None:
                    batch = _prevalidated(pool, batch)
                done, imported, rejected = _commit_chunk(rt, actor, run_row.id, batch, n, imported, rejected)
                if on_chunk:
                    on_chunk(Progress(done, imported, rejected, n))
        finally:
            if collecting:
                gc.enable()
            if pool is not None:
                pool.shutdown(cancel_futures=True)
        with rt.sessions.begin() as s:
            s.execute(update(RUNS).where(RUNS.c.id == run_row.id).values(status="completed", updated_at=datetime.now(UTC)))
    return ImportResult(run_row.id, run_row.file_format, "completed", resumed_from, done, imported, rejected)


def _commit_chunk(rt: Runtime, actor: chunks.Actor, run_id: uuid.UUID, batch: list, n: int, imported: int,
                  rejected: int) -> tuple[int, int, int]:
    """One transaction: the chunk's records and audit events, its rejected rows, the run's progress."""
    with rt.sessions.begin() as s:
        current = s.execute(select(RUNS.c.rows_done).where(RUNS.c.id == run_id).with_for_update()).scalar_one()
        if current >= batch[0].row:  # the run's row is locked: a second `nhr import` of this file waits, then stops here
            raise Conflict("another nhr import of this file for this facility is running", field="file")
        res = chunks.process(s, rt, actor, batch, n)
        if res.errors:
            s.execute(insert(ERRORS), [{"run_id": run_id, "row": r, "field": f, "reason": why}
                                       for (r, f), why in sorted(res.errors.items())])
        done, imported = batch[-1].row, imported + res.imported
        rejected += len({r for r, _ in res.errors})
        s.execute(update(RUNS).where(RUNS.c.id == run_id)
                  .values(rows_done=done, imported=imported, rejected=rejected, updated_at=datetime.now(UTC)))
    return done, imported, rejected


def _pool(workers: int):
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    return ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("spawn"))


def _prevalidated(pool, batch: list[sources.Item]) -> list[sources.Item]:
    from registry.bulk import fhir_io

    checked = pool.map(fhir_io.check, [it.raw for it in batch], chunksize=max(1, len(batch) // 16))
    out = []
    for it, errors in zip(batch, checked):
        if errors:
            out.append(sources.Item(it.row, lambda validated=False, e=errors: _raise(e)))
        else:
            out.append(sources.Item(it.row, lambda validated=False, p=it.parse: p(validated=True)))
    return out


def _raise(errors):
    raise sources.RowInvalid(errors)


def write_error_report(rt: Runtime, run_id: uuid.UUID, target: Path) -> int:
    """The run's rejected rows as CSV: row, field, reason (codes documented in docs/bulk.md)."""
    import csv

    with rt.sessions() as s:
        rows = s.execute(select(ERRORS.c.row, ERRORS.c.field, ERRORS.c.reason).where(ERRORS.c.run_id == run_id)
                         .order_by(ERRORS.c.row, ERRORS.c.field)).all()
    with open(target, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["row", "field", "reason"])
        w.writerows(rows)
    return len(rows)


def count_rows(path: Path, fmt: str | None = None) -> int:
    """Rows in the file (for the progress bar): CSV records, NDJSON lines or Bundle entries."""
    fmt = fmt or sources.detect(path)
    return sum(1 for _ in sources.items(path, "", fmt))
