"""One benchmark run: database, servers, interleaved rounds, medians, report.

Each round runs every workload once; odd rounds run them in reverse order, so each registry
workload and its baseline alternate A/B/B/A and slow drift on the shared machine cancels out.
Ratios are computed within a round (paired) and their median is reported; spread is
(max - min) / median of the rates over the rounds.
"""

from __future__ import annotations

import concurrent.futures
import json
import shutil
import secrets
import statistics
import tempfile
import time
import urllib.parse
import urllib.request
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from bench import baselines, loadgen, report, servers, uploads
from bench.probes import SealingLag
from bench.population import create_database, drop_database, libpq, prepare, seal_loaded_events
from bench.workloads import BY_NAME, COVERAGE, NAMES, UPLOADS, actor, not_yet, one_off, spec, verdict

DEFAULT_SERVER = "postgresql://postgres@127.0.0.1:5432/postgres"
RESULTS = Path(__file__).resolve().parent / "results"


@dataclass
class Options:
    quick: bool = False
    scale: int | None = None
    runs: int | None = None
    duration: float | None = None
    concurrency: int = 32
    workers: int = 2
    json_path: str | None = None
    database_url: str | None = None
    server_url: str = DEFAULT_SERVER
    key_dir: str | None = None
    keep: bool = False
    generator: str | None = None   # force "python" to test the fallback
    db_threads: int = 4
    quiet: bool = False

    def resolved(self) -> Options:
        q = self.quick
        return Options(**{**self.__dict__,
                          "scale": self.scale or (20_000 if q else 1_000_000),
                          "runs": self.runs or (3 if q else 5),
                          "duration": self.duration or (2.0 if q else 10.0)})


def run(opts: Options) -> dict:
    opts = opts.resolved()
    log = (lambda *a: None) if opts.quiet else (lambda *a: print(*a, flush=True))
    generator, _ = loadgen.choose()
    if opts.generator:
        generator = opts.generator
    if generator == "python":
        log(loadgen.WRK_MISSING if opts.generator is None else "using the built-in Python load generator")
    started = datetime.now(UTC)
    created_db = None
    if opts.database_url:
        url = libpq(opts.database_url)
    else:
        created_db = f"nhr_bench_{started:%Y%m%d_%H%M%S}_{time.time_ns() % 1000:03d}"
        url = create_database(opts.server_url, created_db)
    key_dir = opts.key_dir or tempfile.mkdtemp(prefix="nhr-bench-keys-")
    running: list[servers.Server] = []
    try:
        t0 = time.perf_counter()
        pop = prepare(url, key_dir, opts.scale, log=log)
        log(f"population ready: {pop.patients} patients, {pop.doses} doses in {time.perf_counter() - t0:.1f}s")
        pool = concurrent.futures.ThreadPoolExecutor(1)
        sealing = pool.submit(seal_loaded_events, pop)
        reg = servers.start_registry(url, key_dir, opts.workers)
        triv = servers.start_trivial(opts.workers)
        bare = servers.start_bare(url, opts.workers)
        running = [reg, triv, bare]
        for s in running:
            s.wait_ready()
        pop.seal_seconds = sealing.result()
        pool.shutdown()
        log(f"servers ready; loaded audit events sealed in {pop.seal_seconds:.1f}s")
        by_server = {"registry": reg, "trivial": triv, "bare": bare}
        results = _rounds(opts, generator, pop, by_server, log)
        paths = _paths(reg)
        memory = {s.name: s.peak_rss_mb() for s in running}
        if reg.background_peak_rss_mb() is not None:
            memory["nhr worker"] = [reg.background_peak_rss_mb()]
        doc = _document(opts, generator, started, pop, results, paths, memory)
    finally:
        for s in running:
            s.stop()
        if created_db and not opts.keep:
            drop_database(opts.server_url, created_db)
        if not opts.key_dir and not opts.keep:
            shutil.rmtree(key_dir, ignore_errors=True)
    if opts.keep:
        doc["meta"]["kept"] = {"database_url": url, "key_dir": key_dir}
    path = Path(opts.json_path) if opts.json_path else RESULTS / f"{started:%Y%m%dT%H%M%SZ}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(doc, indent=1))
    doc["meta"]["json_path"] = str(path)
    if not opts.quiet:
        report.show(doc)
        log(f"JSON written to {path}")
    return doc


def _token(reg: servers.Server, username: str, password: str) -> str:
    body = urllib.parse.urlencode({"username": username, "password": password}).encode()
    with urllib.request.urlopen(urllib.request.Request(reg.base + "/api/v1/auth/token", data=body), timeout=30) as r:
        return json.loads(r.read())["access_token"]


def _tokens(reg: servers.Server, pop, tokens: dict[str, str] | None = None) -> dict[str, str]:
    """A fresh bearer token for the clinic worker (each round), and one for each health official
    (once per run: tokens live an hour; see `workloads.actor`)."""
    tokens = dict(tokens or {})
    tokens["clinic"] = _token(reg, pop.username, pop.password)
    for who, (u, p) in pop.officials.items():
        if who not in tokens:
            tokens[who] = _token(reg, u, p)
    return tokens


def _duration(opts: Options, name: str) -> float:
    """Seconds to measure `name`: in quick mode the coverage reports and the uploads, added to the
    table later, get half of it (at least 1 s), which keeps the whole run under two minutes."""
    if opts.quick and (name in UPLOADS or name in COVERAGE):
        return max(1.0, opts.duration / 2)
    return opts.duration


def _rounds(opts: Options, generator: str, pop, by_server: dict, log) -> dict[str, list[dict]]:
    results: dict[str, list[dict]] = {n: [] for n in NAMES}
    # Identifiers the workloads invent (B-forms, CNICs) carry the measurement's nonce; a random
    # start keeps a run on a reused database (--database-url) from re-registering the last run's.
    nonce = secrets.randbelow(10_000)
    tokens = _tokens(by_server["registry"], pop)
    warm = min(1.0, opts.duration)
    warmed: set[str] = set()
    for name in NAMES:  # warm-up: connection pools, key caches, the planner's caches (not login: see memory)
        if opts.quick and BY_NAME[name].server in warmed:
            continue  # quick mode: one warm-up per server, to stay under two minutes
        warmed.add(BY_NAME[name].server)
        if name in UPLOADS:
            uploads.measure(name, by_server["registry"].base, pop, tokens[actor(name)], duration=warm,
                            threads=_upload_threads(opts))
        elif BY_NAME[name].server not in ("db", "probe") and name != "login":
            nonce += 1
            loadgen.run(generator, by_server[BY_NAME[name].server].base, spec(name, pop, tokens[actor(name)]),
                        duration=warm, concurrency=_connections(opts, name), nonce=nonce)
    for k in range(opts.runs):
        tokens = _tokens(by_server["registry"], pop, tokens)
        order = NAMES if k % 2 == 0 else list(reversed(NAMES))
        for name in order:
            nonce += 1
            w = BY_NAME[name]
            if w.server == "probe":
                continue  # sampled while its workload runs (audit_sealing: during read)
            cpu_before = by_server[w.server].cpu_seconds() if w.server in by_server else 0.0
            if name == "read":
                with SealingLag(pop.url) as probe:
                    r = loadgen.run(generator, by_server[w.server].base, spec(name, pop, tokens[actor(name)]),
                                    duration=opts.duration, concurrency=opts.concurrency, nonce=nonce)
                results["audit_sealing"].append(probe.result())
            elif name == "pg_select":
                r = baselines.pg_select_floor(pop.url, pop.any_ids, opts.duration, threads=opts.db_threads)
            elif name == "copy":
                r = baselines.copy_floor(pop.url, opts.duration)
            elif name in UPLOADS:
                r = uploads.measure(name, by_server["registry"].base, pop, tokens[actor(name)],
                                    duration=_duration(opts, name), threads=_upload_threads(opts), seed=nonce)
            else:
                r = loadgen.run(generator, by_server[w.server].base, spec(name, pop, tokens[actor(name)]),
                                duration=_duration(opts, name), concurrency=_connections(opts, name), nonce=nonce)
            if w.server in by_server:
                r["rss_mb_after"] = max(by_server[w.server].rss_mb() or [0.0])
                served = r["rate"] * r.get("seconds", _duration(opts, name))
                if served > 0:
                    r["cpu_us"] = (by_server[w.server].cpu_seconds() - cpu_before) / served * 1e6
            results[name].append(r)
            log(f"round {k + 1}/{opts.runs}  {name:<12} {r['rate']:>10.1f}/s  p50 {r['p50_ms']:.1f} ms"
                f"  p99 {r['p99_ms']:.1f} ms  errors {r.get('errors', 0)}  non-2xx {r.get('non2xx', 0)}")
    return results


def _upload_threads(opts: Options) -> int:
    """Concurrent uploads: a few devices at once (each request is 20-50 records), never more
    than the connections of the other workloads."""
    return max(1, min(4, opts.concurrency))


def _connections(opts: Options, name: str) -> int:
    """Coverage reports are measured with one connection: the latency an official waits for a
    report (the target), not the queue that 32 concurrent report readers would build on 2 cores."""
    return 1 if name in COVERAGE else opts.concurrency


def _paths(reg: servers.Server) -> list[str]:
    try:
        with urllib.request.urlopen(reg.base + "/openapi.json", timeout=10) as r:
            return list(json.loads(r.read()).get("paths", {}))
    except OSError:
        return []


def _median_ratio(a: list[dict], b: list[dict]) -> float | None:
    pairs = [x["rate"] / y["rate"] for x, y in zip(a, b) if y["rate"]]
    return statistics.median(pairs) if pairs else None


def summarise(results: dict[str, list[dict]]) -> dict[str, dict]:
    med: dict[str, dict] = {}
    for name, runs in results.items():
        w = BY_NAME[name]
        rates = [r["rate"] for r in runs]
        m = statistics.median(rates)
        med[name] = {
            "title": w.title, "server": w.server, "unit": runs[0].get("unit", "requests"), "runs": runs,
            "rate": m, "p50_ms": statistics.median(r["p50_ms"] for r in runs),
            "p99_ms": statistics.median(r["p99_ms"] for r in runs),
            "spread": (max(rates) - min(rates)) / m if m else 0.0,
            "errors": sum(r.get("errors", 0) for r in runs), "non2xx": sum(r.get("non2xx", 0) for r in runs),
            "refused_records": sum(r.get("refused_records", 0) for r in runs),
            "baseline": w.baseline, "floor": w.floor, "target": w.target,
        }
        if any("rss_mb_after" in r for r in runs):
            med[name]["rss_mb_after_round1"] = runs[0].get("rss_mb_after", 0.0)
        if w.server in ("registry", "bare") and med[name]["unit"] == "requests" and name not in COVERAGE:
            med[name]["ratio_trivial"] = _median_ratio(runs, results["trivial"])
        if all("cpu_us" in r for r in runs):
            med[name]["cpu_us"] = statistics.median(r["cpu_us"] for r in runs)
            if "ratio_trivial" in med[name]:
                pairs = [t["cpu_us"] / r["cpu_us"] for r, t in zip(runs, results["trivial"]) if r["cpu_us"] and "cpu_us" in t]
                med[name]["cpu_ratio_trivial"] = statistics.median(pairs) if pairs else None
        if w.baseline:
            med[name]["ratio_baseline"] = _median_ratio(runs, results[w.baseline])
        if w.floor:
            med[name]["ratio_floor"] = _median_ratio(runs, results[w.floor])
    for name in med:
        med[name]["status"] = verdict(name, med)
    return med


def _document(opts: Options, generator: str, started: datetime, pop, results, paths, memory) -> dict:
    return {
        "meta": {
            "started": started.isoformat(timespec="seconds"), "mode": "quick" if opts.quick else "full",
            "scale": opts.scale, "patients": pop.patients, "doses": pop.doses, "population_seconds": round(pop.load_seconds, 1),
            "rebuild_seconds": round(pop.rebuild_seconds, 2), "seal_seconds": round(pop.seal_seconds, 2),
            "runs": opts.runs, "duration_s": opts.duration, "concurrency": opts.concurrency, "workers": opts.workers,
            "db_threads": opts.db_threads, "generator": generator, "machine": report.machine(pop.url, generator),
        },
        "workloads": summarise(results),
        "one_off": one_off(pop),
        "not_yet_implemented": not_yet(paths),
        "memory": {"peak_rss_mb": memory, "registry_workers_peak_rss_mb_max": max(memory.get("registry") or [0])},
    }
