"""`nhr dedupe run` end to end on PostgreSQL: a synthetic province (registry/demo/
linkage_population.py, encrypted and blind-indexed as registration writes it) is loaded into a
fresh database, then the dedupe runs as the CLI runs it (registry/linkage/dedupe.run: read page
by page, decrypt, prepare, block, score, propose in bulk, checkpoint every unit). Prints the
phases in wall-clock and process CPU seconds (the machine is shared: CPU seconds are the work),
per record, and the 1M-children figure they imply, reading and writing being linear in the
records and the proposals, and matching measured by `python -m bench.matching --size 1000000`.

    python -m bench.matching_dedupe --pg postgresql://postgres@127.0.0.1:5432/postgres --size 50000

`--full-run` (bench/dedupe_full_run.py): the province (1,000,000 children by default) is loaded by
COPY (bench/province_copy.py) and the real CLI, `nhr dedupe run --province PK-PB`, runs as its own
process: wall time, CPU, peak RSS, pairs/s, candidates written, and the queue's precision, recall
and F1 against the injected duplicates; `--checks` also reruns it (idempotent: nothing new) and
kills a run midway and resumes it (the same queue).

    python -m bench.matching_dedupe --pg postgresql://postgres@127.0.0.1:5432/postgres --full-run --checks
"""

from __future__ import annotations

import argparse
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

from sqlalchemy import create_engine, text


def _timed(fn):
    t, c = time.perf_counter(), time.process_time()
    out = fn()
    return out, time.perf_counter() - t, time.process_time() - c


def measure(pg: str, size: int, seed: int = 41) -> list[str]:
    from bench.matching_registration import _load
    from registry import bootstrap
    from registry.linkage import dedupe
    from registry.runtime import Runtime
    from registry.settings import Settings

    tmp = Path(tempfile.mkdtemp(prefix="nhr-dedupe-bench-"))
    db_name = f"nhr_dedupe_{datetime.now(UTC):%Y%m%d%H%M%S}"
    admin = create_engine(pg, isolation_level="AUTOCOMMIT")
    with admin.connect() as c:
        c.execute(text(f'CREATE DATABASE "{db_name}"'))
    settings = Settings(env="development", database_url=pg.rsplit("/", 1)[0] + f"/{db_name}", key_dir=tmp / "keyring",
                        passwords={"argon2_memory_kib": 1024, "argon2_time_cost": 1},
                        audit={"seal_interval_seconds": 0}, reports={"refresh_interval_seconds": 0})
    rt = Runtime.build(settings, provisioning=True)
    try:
        bootstrap.init(rt)
        _, load_wall, _ = _timed(lambda: _load(rt, size, seed))
        (recs, _, _), read_wall, read_cpu = _timed(lambda: dedupe.load(rt, "PK-PB"))
        n = len(recs)
        del recs
        summary, run_wall, run_cpu = _timed(lambda: dedupe.run(rt, "PK-PB"))
        match_wall, match_cpu = run_wall - read_wall, run_cpu - read_cpu
        return [f"`nhr dedupe run` on PostgreSQL, {n:,} records of PK-PB (loaded in {load_wall:.0f} s): "
                f"{summary.pairs_scored:,} pairs scored, {summary.proposed:,} proposed.",
                "",
                "| phase | wall s | CPU s (this process) | CPU per record |",
                "|---|---|---|---|",
                f"| read, decrypt, prepare (pages of {dedupe.PAGE:,}) | {read_wall:.1f} | {read_cpu:.1f} | {read_cpu / n * 1e6:.0f} us |",
                f"| block, score, propose in bulk, checkpoint | {match_wall:.1f} | {match_cpu:.1f} | {match_cpu / n * 1e6:.0f} us |",
                f"| whole run | {run_wall:.1f} | {run_cpu:.1f} | {run_cpu / n * 1e6:.0f} us |",
                "",
                f"Reading 1M records at this CPU cost: {read_cpu / n * 1e6 / 60:.1f} min CPU."]
    finally:
        rt.engine.dispose()
        with admin.connect() as c:
            c.execute(text(f'DROP DATABASE IF EXISTS "{db_name}" WITH (FORCE)'))
        admin.dispose()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--pg", required=True, help="a PostgreSQL server URL; a database is created on it and dropped")
    ap.add_argument("--size", type=int, default=None, help="children before duplicates (default 50,000; --full-run 1,000,000)")
    ap.add_argument("--full-run", action="store_true", help="COPY-load the province, run the CLI as its own process, score the queue")
    ap.add_argument("--checks", action="store_true", help="with --full-run: also a rerun (idempotent) and a killed and resumed run")
    ap.add_argument("--keep-queue", action="store_true",
                    help="with --checks: do not empty the queue before the killed run (cheaper; the resume must add nothing)")
    ap.add_argument("--workers", type=int, default=1, help="with --full-run: nhr dedupe run --workers")
    ap.add_argument("--db", default=None, help="with --full-run: database name (default: a new one, dropped at the end)")
    ap.add_argument("--keep", action="store_true", help="with --full-run: keep the database and keyring (for --reuse)")
    ap.add_argument("--reuse", type=Path, default=None, metavar="KEY_DIR",
                    help="with --full-run and --db: the database is loaded already, with this keyring; skip the load")
    ap.add_argument("--load-only", action="store_true",
                    help="with --full-run: load the province into --db and keep it (and its keyring) without running "
                         "the dedupe; prints the --reuse command that times the dedupe alone")
    ap.add_argument("--key-dir", type=Path, default=None,
                    help="with --full-run and a new database: where its keyring goes (default: a new temporary "
                         "directory); the injected truth is written next to it")
    args = ap.parse_args(argv)
    if args.full_run:
        from bench import dedupe_full_run

        print("\n".join(dedupe_full_run.measure(args.pg, args.size or 1_000_000, workers=args.workers, checks=args.checks,
                                                db=args.db, keep=args.keep, reuse=args.reuse,
                                                empty_before_kill=not args.keep_queue, load_only=args.load_only,
                                                key_dir=args.key_dir)))
        return 0
    args.size = args.size or 50_000
    print("\n".join(measure(args.pg, args.size)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
