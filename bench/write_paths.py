"""`python -m bench.write_paths --base DIR`: register and record a dose, this checkout against
another (DIR: e.g. `git archive main | tar -x -C DIR`), on one database, interleaved (issue 17).

Both registries serve the same population (`bench/population.py`, quick scale by default) with
the same keys; each round measures the trivial endpoint, then register and dose on each tree,
A/B in even rounds and B/A in odd ones. Reported per tree: the median over rounds of the rate
ratio to the trivial endpoint of the same round, and the workers' CPU per request. `--profile`
records py-spy (GIL-holding samples, bench/pyspy.py) on this tree's workers during one more
register and dose burst. Results as JSON on stdout's last line and in bench/results/.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

from bench import loadgen, servers
from bench.population import create_database, drop_database, prepare
from bench.pyspy import Profile
from bench.runner import DEFAULT_SERVER, RESULTS, _tokens
from bench.workloads import spec


def _spec(name, pop, token):
    return spec("register", pop, token) if name == "register_distinct" else spec(name, pop, token)


def _measure(generator, server, pop, token, name, duration, concurrency, nonce) -> dict:
    before = server.cpu_seconds()
    r = loadgen.run(generator, server.base, _spec(name, pop, token), duration=duration, concurrency=concurrency, nonce=nonce)
    served = r["rate"] * r.get("seconds", duration)
    r["cpu_us"] = (server.cpu_seconds() - before) / served * 1e6 if served else None
    return r


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.write_paths")
    p.add_argument("--base", required=True, help="the other checkout (served as 'base')")
    p.add_argument("--scale", type=int, default=20_000)
    p.add_argument("--runs", type=int, default=5)
    p.add_argument("--duration", type=float, default=4.0)
    p.add_argument("--concurrency", type=int, default=32)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--server-url", default=DEFAULT_SERVER)
    p.add_argument("--profile", action="store_true")
    p.add_argument("--register", choices=("register", "register_distinct"), default="register_distinct",
                   help="name of the registration workload in the results; both take distinct children (bench.workloads.register_spec)")
    a = p.parse_args(argv)
    generator, _ = loadgen.choose()
    started = datetime.now(UTC)
    db = f"nhr_bench_wp_{started:%Y%m%d_%H%M%S}"
    url = create_database(a.server_url, db)
    key_dir = tempfile.mkdtemp(prefix="nhr-bench-keys-")
    running = []
    try:
        pop = prepare(url, key_dir, a.scale, log=lambda *x: print(*x, flush=True))
        new = servers.start_registry(url, key_dir, a.workers, name="new")
        base = servers.start_registry(url, key_dir, a.workers, tree=Path(a.base).resolve(), name="base")
        triv = servers.start_trivial(a.workers)
        running = [new, base, triv]
        for s in running:
            s.wait_ready(120)
        token = _tokens(new, pop)["clinic"]
        reg = a.register
        arms = [("trivial", triv, "trivial"), (reg, base, "base"), (reg, new, "new"),
                ("dose", base, "base"), ("dose", new, "new")]
        nonce = int(time.time()) % 100_000 * 10
        for name, server, _ in arms:  # warm-up
            nonce += 1
            loadgen.run(generator, server.base, _spec(name, pop, token), duration=1.0, concurrency=a.concurrency, nonce=nonce)
        rounds = []
        for k in range(a.runs):
            token = _tokens(new, pop)["clinic"]
            order = arms if k % 2 == 0 else list(reversed(arms))
            got = {"load": os.getloadavg()[0]}
            for name, server, tree in order:
                nonce += 1
                r = _measure(generator, server, pop, token, name, a.duration, a.concurrency, nonce)
                got[f"{name}/{tree}"] = r
                print(f"round {k + 1} {name}/{tree}: {r['rate']:.1f}/s p50 {r['p50_ms']:.0f} ms non-2xx {r.get('non2xx', 0)}"
                      f" errors {r.get('errors', 0)} cpu {r['cpu_us'] or 0:.0f} us", flush=True)
            rounds.append(got)
        summary = {}
        for key in (f"{reg}/base", f"{reg}/new", "dose/base", "dose/new"):
            ratios = [r[key]["rate"] / r["trivial/trivial"]["rate"] for r in rounds]
            cpu = [r[key]["cpu_us"] for r in rounds if r[key]["cpu_us"]]
            summary[key] = {"ratio_trivial": statistics.median(ratios), "ratios": [round(x, 4) for x in ratios],
                            "rate": statistics.median(r[key]["rate"] for r in rounds),
                            "cpu_us": statistics.median(cpu) if cpu else None,
                            "non2xx": sum(r[key].get("non2xx", 0) for r in rounds)}
        summary["trivial"] = {"rate": statistics.median(r["trivial/trivial"]["rate"] for r in rounds),
                              "cpu_us": statistics.median(r["trivial/trivial"]["cpu_us"] for r in rounds)}
        summary["load"] = [round(r["load"], 1) for r in rounds]
        if a.profile:
            for name in (reg, "dose"):
                prof = Profile(new.worker_pids(), RESULTS / "profiles", f"write-paths-{name}")
                nonce += 1
                loadgen.run(generator, new.base, _spec(name, pop, token), duration=max(a.duration, 8.0),
                            concurrency=a.concurrency, nonce=nonce)
                summary[f"profile/{name}"] = prof.stop()
        doc = {"started": started.isoformat(timespec="seconds"), "generator": generator, "scale": a.scale,
               "workers": a.workers, "summary": summary, "rounds": rounds}
        RESULTS.mkdir(parents=True, exist_ok=True)
        (RESULTS / f"write-paths-{started:%Y%m%dT%H%M%SZ}.json").write_text(json.dumps(doc, indent=1, default=str))
        print(json.dumps(summary, default=str))
    finally:
        for s in running:
            s.stop()
        drop_database(a.server_url, db)
        shutil.rmtree(key_dir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
