"""`python -m bench [--quick] [--scale N] [--runs K] ...`: see bench/README.md."""

from __future__ import annotations

import argparse
import sys

from bench.runner import DEFAULT_SERVER, Options, run


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench", description="Measure NHR against its floors and DESIGN.md targets.")
    p.add_argument("--quick", action="store_true", help="small population (20,000), 3 rounds of 2 s: under two minutes")
    p.add_argument("--scale", type=int, help="patients to generate (default 1,000,000; quick 20,000)")
    p.add_argument("--runs", type=int, help="rounds; each runs every workload once (default 5; quick 3)")
    p.add_argument("--duration", type=float, help="seconds per measurement (default 10; quick 2)")
    p.add_argument("--concurrency", type=int, default=32, help="open connections of the load generator (default 32)")
    p.add_argument("--workers", type=int, default=2, help="uvicorn workers per server (default 2)")
    p.add_argument("--json", dest="json_path", help="where to write the results (default bench/results/<timestamp>.json)")
    p.add_argument("--database-url", help="use this existing database (initialised; loaded only if it has no patients; "
                                          "never dropped) instead of creating nhr_bench_<timestamp>")
    p.add_argument("--server-url", default=DEFAULT_SERVER, help=f"where to create the fresh database (default {DEFAULT_SERVER})")
    p.add_argument("--key-dir", help="key directory (default: a temporary one, removed at the end unless --keep); "
                                     "needed again to reuse a kept database")
    p.add_argument("--keep", action="store_true", help="keep the database and the key directory")
    p.add_argument("--generator", choices=("wrk", "python"), help="force a load generator (default: wrk if installed)")
    p.add_argument("--db-threads", type=int, default=4, help="threads of the raw PostgreSQL select floor (default 4)")
    a = p.parse_args(argv)
    if a.scale is not None and a.scale < 100:
        p.error("--scale must be at least 100 (the benchmark facility needs patients)")
    opts = Options(quick=a.quick, scale=a.scale, runs=a.runs, duration=a.duration, concurrency=a.concurrency,
                   workers=a.workers, json_path=a.json_path, database_url=a.database_url, server_url=a.server_url,
                   key_dir=a.key_dir, keep=a.keep, generator=a.generator, db_threads=a.db_threads)
    run(opts)
    return 0


if __name__ == "__main__":
    sys.exit(main())
