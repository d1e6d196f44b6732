"""One batch deduplication of a province at a time, across processes and hosts.

`nhr dedupe run` and the scheduled run in `nhr worker` (registry/linkage/schedule.py) take this
lock for the whole run, which spans many transactions (a checkpoint per blocking unit):

- PostgreSQL: a session-level advisory lock (`pg_try_advisory_lock`) held on a connection of its
  own in autocommit mode (no transaction stays open while the run works); it is released when
  the run ends, and by the server when the process dies, so a crashed run never blocks the next.
- SQLite (development and tests, one host): an exclusive `flock` on a file next to the database
  file, released when the file is closed, also by the kernel when the process dies. Separate
  opens of the file exclude each other even within one process (two threads), as two workers.

Never waits: a second runner learns at once that the province is being deduplicated and does
nothing (the scheduler skips it, the CLI says so). Keys hold the province code only.
"""

from __future__ import annotations

import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from sqlalchemy import text

NAMESPACE = 1_313_104  # first half of the advisory lock key: "dedupe run"; the second is the province


def _key(province: str) -> int:
    return zlib.crc32(province.encode()) - 2**31  # a signed int4


@contextmanager
def exclusive(rt, province: str) -> Iterator[bool]:
    """Yields True while this caller holds the province's dedupe lock, False (at once) if another
    runner holds it."""
    if rt.settings.is_sqlite:
        with _file_lock(rt.settings.database_url, province) as held:
            yield held
        return
    conn = rt.engine.connect().execution_options(isolation_level="AUTOCOMMIT")
    try:
        held = bool(conn.execute(text("SELECT pg_try_advisory_lock(:ns, :k)"),
                                 {"ns": NAMESPACE, "k": _key(province)}).scalar())
        try:
            yield held
        finally:
            if held:
                conn.execute(text("SELECT pg_advisory_unlock(:ns, :k)"), {"ns": NAMESPACE, "k": _key(province)})
    finally:
        conn.close()


@contextmanager
def _file_lock(url: str, province: str) -> Iterator[bool]:
    import fcntl

    from sqlalchemy.engine import make_url

    database = make_url(url).database
    if not database or database == ":memory:":  # one connection, one process: nothing to exclude
        yield True
        return
    path = Path(f"{database}.dedupe-{province}.lock")
    with open(path, "a+b") as f:
        try:
            fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            yield False
            return
        try:
            yield True
        finally:
            fcntl.flock(f.fileno(), fcntl.LOCK_UN)
