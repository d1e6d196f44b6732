"""`python -m bench.reencrypt [--scale N] [--rounds K] [--duration S]`: online re-encryption
(issue 16) on PostgreSQL: how fast `nhr keys reencrypt`'s job moves a province's rows to a new
field-key version, and what it costs the audited read while it runs.

The population and the registry server are the main benchmark's (`bench/population.py`,
`bench/servers.py`: `nhr init`'s code, synthetic children encrypted with the project's codec,
`nhr serve` with 2 workers); the read workload is the main benchmark's `read` (the clinic
worker of EPI Centre Shadman, Lahore, reading its own Punjab children, wrk on loopback). Each
round measures the read alone and the read while the job runs, A/B then B/A; the job rotates
Punjab's field key and re-encrypts every Punjab row, over and over (a new version each time),
in this process until the read window ends. Reported: the job's rows/s with the read running
and alone, and the read's rate during the job as a ratio to without (median of per-round
ratios). Nothing here is a test: it prints numbers and asserts nothing about them.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import tempfile
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

from bench import loadgen, servers
from bench.population import create_database, drop_database, prepare, settings_for
from bench.runner import _token
from bench.workloads import spec

DEFAULT_SERVER = "postgresql://postgres@127.0.0.1:5432/postgres"
CUSTODIAN = "PK-PB"


class Job:
    """Rotate and re-encrypt `CUSTODIAN` in a loop on a thread until stopped; counts rows moved."""

    def __init__(self, rt, batch_size: int) -> None:
        self.rt, self.batch_size = rt, batch_size
        self.rows = 0
        self.seconds = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        from registry.keys import reencrypt

        t0 = time.perf_counter()
        while not self._stop.is_set():
            with self.rt.engine.begin() as conn:
                self.rt.keys.rotate(conn, CUSTODIAN)
            out = reencrypt.reencrypt(self.rt, CUSTODIAN, batch_size=self.batch_size, should_stop=self._stop.is_set)
            self.rows += out.moved
        self.seconds = time.perf_counter() - t0

    def __enter__(self) -> Job:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()

    @property
    def rate(self) -> float:
        return self.rows / self.seconds if self.seconds else 0.0


def _alone(rt, batch_size: int, seconds: float) -> float:
    job = Job(rt, batch_size)
    with job:
        time.sleep(seconds)
    return job.rate


def measure(*, scale: int, rounds: int, duration: float, concurrency: int, batch_size: int, server_url: str, log=print) -> dict:
    from registry.runtime import Runtime

    started = datetime.now(UTC)
    name = f"nhr_bench_reenc_{started:%Y%m%d_%H%M%S}"
    url = create_database(server_url, name)
    key_dir = tempfile.mkdtemp(prefix="nhr-bench-keys-")
    reg = None
    generator, _ = loadgen.choose()
    try:
        pop = prepare(url, key_dir, scale, log=log)
        rt = Runtime.build(settings_for(pop.url, key_dir))
        rt.load_keys()
        with rt.engine.connect() as c:
            from sqlalchemy import text

            punjab = c.execute(text("SELECT count(*) FROM patients WHERE custodian = :c"), {"c": CUSTODIAN}).scalar_one()
            punjab_doses = c.execute(text("SELECT count(*) FROM immunizations WHERE custodian = :c"), {"c": CUSTODIAN}).scalar_one()
        log(f"population: {pop.patients} patients ({punjab} in Punjab), {pop.doses} doses ({punjab_doses} in Punjab)")
        reg = servers.start_registry(pop.url, key_dir, 2)
        reg.wait_ready()
        token = _token(reg, pop.username, pop.password)
        read = spec("read", pop, token)
        loadgen.run(generator, reg.base, read, duration=1, concurrency=concurrency, nonce=0)  # warm-up
        rows = []
        for k in range(rounds):
            pair = {}
            for arm in (("alone", "during") if k % 2 == 0 else ("during", "alone")):
                if arm == "alone":
                    pair["read_alone"] = loadgen.run(generator, reg.base, read, duration=duration, concurrency=concurrency, nonce=k)
                else:
                    job = Job(rt, batch_size)
                    with job:
                        pair["read_during"] = loadgen.run(generator, reg.base, read, duration=duration,
                                                          concurrency=concurrency, nonce=k)
                    pair["job_rows_per_s_under_read"] = job.rate
            pair["job_rows_per_s_alone"] = _alone(rt, batch_size, duration)
            pair["ratio"] = pair["read_during"]["rate"] / pair["read_alone"]["rate"]
            rows.append(pair)
            log(f"round {k + 1}/{rounds}: read alone {pair['read_alone']['rate']:.0f}/s, during re-encryption "
                f"{pair['read_during']['rate']:.0f}/s (ratio {pair['ratio']:.2f}, non-2xx {pair['read_during']['non2xx']}); "
                f"job {pair['job_rows_per_s_under_read']:.0f} rows/s under the read, {pair['job_rows_per_s_alone']:.0f} alone")
        rt.engine.dispose()
        doc = {"meta": {"started": started.isoformat(), "scale": scale, "patients": pop.patients, "punjab_patients": punjab,
                        "punjab_doses": punjab_doses, "rounds": rounds, "duration": duration, "concurrency": concurrency,
                        "batch_size": batch_size, "generator": generator},
               "summary": {"read_ratio_median": statistics.median(r["ratio"] for r in rows),
                           "read_alone_median": statistics.median(r["read_alone"]["rate"] for r in rows),
                           "read_during_median": statistics.median(r["read_during"]["rate"] for r in rows),
                           "read_during_non2xx": sum(r["read_during"]["non2xx"] for r in rows),
                           "job_rows_per_s_under_read_median": statistics.median(r["job_rows_per_s_under_read"] for r in rows),
                           "job_rows_per_s_alone_median": statistics.median(r["job_rows_per_s_alone"] for r in rows)},
               "rounds": rows}
    finally:
        if reg is not None:
            reg.stop()
        drop_database(server_url, name)
        shutil.rmtree(key_dir, ignore_errors=True)
    return doc


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m bench.reencrypt", description=__doc__.split("\n\n")[0])
    ap.add_argument("--scale", type=int, default=20_000, help="patients in the population (all provinces)")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--duration", type=float, default=5.0, help="seconds per measurement")
    ap.add_argument("--concurrency", type=int, default=16)
    ap.add_argument("--batch-size", type=int, default=500)
    ap.add_argument("--server-url", default=DEFAULT_SERVER)
    ap.add_argument("--json", default=None, help="where to write the results (default bench/results/reencrypt-<time>.json)")
    a = ap.parse_args(argv)
    doc = measure(scale=a.scale, rounds=a.rounds, duration=a.duration, concurrency=a.concurrency,
                  batch_size=a.batch_size, server_url=a.server_url)
    s = doc["summary"]
    print(f"read during re-encryption / alone: {s['read_ratio_median']:.2f} (median of {a.rounds} rounds; "
          f"{s['read_during_median']:.0f} vs {s['read_alone_median']:.0f} reads/s, {s['read_during_non2xx']} non-2xx)")
    print(f"re-encryption: {s['job_rows_per_s_under_read_median']:.0f} rows/s under the read, "
          f"{s['job_rows_per_s_alone_median']:.0f} rows/s alone")
    path = Path(a.json) if a.json else Path(__file__).parent / "results" / f"reencrypt-{doc['meta']['started'][:19].replace(':', '')}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(doc, indent=1))
    print(f"JSON written to {path}")


if __name__ == "__main__":
    main()
