"""The `nhr worker`'s peak memory against the population (issue 17): load a population with
bench/population.py, then run one pass of the worker's jobs in a fresh process, as `nhr worker`
runs them (each in a worker thread): seal every unsealed audit event (the loader's: a
`patient.create` and an `immunization.create` a child, about 1.9 a child), then fold the queued patient
changes into the coverage aggregates. Prints the process's VmHWM (peak resident set) after each
job, and with `--trace` the job's peak Python allocations (tracemalloc; slower).

    python -m bench.worker_memory --scale 20000
    python -m bench.worker_memory --scale 200000 --tree main=/work/main --tree branch=.

Compare two scales in the same session (the machine is shared): the peak should not follow the
population. Nothing here prints a name or an identifier.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path

import psycopg

from bench import population

REPO = Path(__file__).resolve().parent.parent


def _status_mib(field: str) -> float:
    with open("/proc/self/status", encoding="ascii") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    return 0.0


def one_pass(url: str, key_dir: str, trace: bool) -> dict:
    """The worker's jobs once each, in a worker thread as registry/periodic.py runs them."""
    import tracemalloc

    from registry.audit_log import sealing
    from registry.reports import background as refresher
    from registry.runtime import Runtime

    rt = Runtime.build(population.settings_for(url, key_dir))
    rt.load_keys()
    out: dict = {"start_vmhwm_mib": round(_status_mib("VmHWM"), 1)}
    jobs = {"seal": lambda: sealing.seal_all(rt), "refresh": lambda: refresher.refresh_all(rt)}
    with ThreadPoolExecutor(1) as pool:
        for name, job in jobs.items():
            if trace:
                tracemalloc.start()
            t0 = time.perf_counter()
            done = pool.submit(job).result()
            seconds = time.perf_counter() - t0
            peak = tracemalloc.get_traced_memory()[1] / 2**20 if trace else None
            if trace:
                tracemalloc.stop()
            out[name] = {"done": done, "seconds": round(seconds, 1), "vmhwm_mib": round(_status_mib("VmHWM"), 1),
                         "vmrss_mib": round(_status_mib("VmRSS"), 1),
                         "traced_peak_mib": None if peak is None else round(peak, 1)}
    rt.engine.dispose()
    return out


def _clone(server_url: str, template: str, name: str) -> str:
    with psycopg.connect(population.libpq(server_url), autocommit=True) as c:
        c.execute(f'CREATE DATABASE "{name}" TEMPLATE "{template}"')
    return population.libpq(server_url).rpartition("/")[0] + f"/{name}"


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--scale", type=int, default=20000)
    p.add_argument("--server-url", default=os.environ.get("NHR_BENCH_SERVER_URL", "postgresql://postgres@127.0.0.1:5432/postgres"))
    p.add_argument("--tree", action="append", default=[], metavar="LABEL=PATH",
                   help="run the pass with another checkout's code (e.g. main=/work/main; repeatable): each tree "
                        "gets its own copy of the loaded database (CREATE DATABASE ... TEMPLATE)")
    p.add_argument("--dirty", type=int, default=0, metavar="N",
                   help="queue N children for the refresher first (a backlog of changes, as after an outage)")
    p.add_argument("--trace", action="store_true", help="also each job's peak Python allocations (tracemalloc)")
    p.add_argument("--pass-only", nargs=2, metavar=("URL", "KEY_DIR"), help=argparse.SUPPRESS)
    a = p.parse_args(argv)
    if a.pass_only:
        print(json.dumps(one_pass(a.pass_only[0], a.pass_only[1], a.trace)), flush=True)
        return
    trees = [t.split("=", 1) for t in a.tree] or [["this", str(REPO)]]
    name = f"nhr_bench_wm_{datetime.now(UTC):%Y%m%d_%H%M%S}"
    url = population.create_database(a.server_url, name)
    key_dir = tempfile.mkdtemp(prefix="nhr-bench-keys-")
    try:
        t0 = time.perf_counter()
        pop = population.prepare(url, key_dir, a.scale, log=lambda *x: print(*x, flush=True))
        print(f"population: {pop.patients} children, {pop.doses} doses in {time.perf_counter() - t0:.0f}s", flush=True)
        if a.dirty:
            with psycopg.connect(population.libpq(url), autocommit=True) as c:
                c.execute("INSERT INTO report_dirty_patients (patient_id) SELECT id FROM patients ORDER BY id LIMIT %s",
                          (a.dirty,))
        for label, tree in trees:
            copy = f"{name}_{label}"
            try:
                cmd = [sys.executable, __file__, "--pass-only", _clone(a.server_url, name, copy), key_dir]
                env = {**os.environ, "PYTHONPATH": tree}  # the tree's registry (and bench.population)
                out = subprocess.run(cmd + (["--trace"] if a.trace else []), check=True, capture_output=True, text=True,
                                     cwd=tree, env=env).stdout
                res = json.loads(out.strip().splitlines()[-1])
            finally:
                population.drop_database(a.server_url, copy)
            res.update(tree=label, children=pop.patients, doses=pop.doses)
            print(json.dumps(res), flush=True)
    finally:
        population.drop_database(a.server_url, name)
        shutil.rmtree(key_dir, ignore_errors=True)


if __name__ == "__main__":
    main()
