"""The audited read's CPU per request inside one process, A/B between git refs (issue 17).

    python -m bench.readpath [--pg SERVER_URL] [--refs e8621d1 HEAD] [--rounds 5] [--requests 2000]
                             [--patients 200] [--concurrency 8]

Why: `python -m bench.gate` measures through uvicorn and wrk on a machine shared with other
sessions; its rates and even its CPU per request move by 20-30% between runs, more than most
single changes to the read path. This measures only what the registry's code costs: one process
per (ref, round) builds the app of that ref (`create_app`, its lifespan, the async pool), then
drives `GET /api/v1/patients/{id}` straight through the ASGI app (every middleware, the hot gate,
the service, both round trips to PostgreSQL, the audit event) with `concurrency` requests in
flight, and reports the process's CPU time (user + system) per request. No HTTP parsing, no
socket writes to a client, no load generator: those are the same for every ref (uvicorn) and are
measured by bench.gate. Rounds interleave the refs (A/B/B/A); the result is the median per ref
and the per-round ratio to the first ref. Every answer must be 200 or the run fails.

`--cursor-ab` measures one change precisely instead: in this tree only, one process alternates
blocks of 100 requests between the statement cursors re-used (registry/async_database.py
`_cursor`) and a new cursor for every statement (as `conn.execute` does), so that whatever the
neighbours do falls on both alike; it reports the median per-round ratio.

The database (fresh, dropped at the end) and its patients come from bench.gate's preparation;
each ref runs from a `git archive` of it under .bench/ (HEAD: this tree as it is, uncommitted
changes included).
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve()


def _child(spec_path: str) -> None:
    """Runs inside the ref's tree (PYTHONPATH): prints {"cpu_us": ..., "statuses": {...}}."""
    import asyncio
    import collections

    import uvloop

    from api.app import create_app

    spec = json.loads(Path(spec_path).read_text())
    app = create_app()
    token, ids, n, conc = spec["token"], spec["ids"], spec["requests"], spec["concurrency"]
    statuses: collections.Counter = collections.Counter()
    auth = f"Bearer {token}".encode()

    async def request(i: int) -> None:
        path = f"/api/v1/patients/{ids[i % len(ids)]}"
        scope = {"type": "http", "asgi": {"version": "3.0", "spec_version": "2.3"}, "http_version": "1.1",
                 "method": "GET", "scheme": "http", "path": path, "raw_path": path.encode(), "query_string": b"",
                 "root_path": "", "headers": [(b"host", b"bench"), (b"authorization", auth), (b"accept", b"*/*")],
                 "client": ("127.0.0.1", 40000 + i % 20000), "server": ("127.0.0.1", 8000), "state": {}}

        async def receive():
            return {"type": "http.request", "body": b"", "more_body": False}

        async def send(message):
            if message["type"] == "http.response.start":
                statuses[message["status"]] += 1

        await app(scope, receive, send)

    async def main() -> float:
        queue: asyncio.Queue = asyncio.Queue()
        startup_done = asyncio.Event()

        async def lifespan_send(message):
            if message["type"].startswith("lifespan.startup"):
                startup_done.set()

        life = asyncio.ensure_future(app({"type": "lifespan", "asgi": {"version": "3.0"}, "state": {}}, queue.get, lifespan_send))
        await queue.put({"type": "lifespan.startup"})
        await startup_done.wait()

        async def worker(k: int, count: int) -> None:
            for j in range(count):
                await request(k * count + j)

        await asyncio.gather(*(worker(k, 200 // conc) for k in range(conc)))  # warm-up: pool, caches, prepared statements
        statuses.clear()
        if spec.get("cursor_ab"):
            return await cursor_ab(worker, conc, n)
        t = time.process_time()
        await asyncio.gather(*(worker(k, n // conc) for k in range(conc)))
        cpu = time.process_time() - t
        await queue.put({"type": "lifespan.shutdown"})
        await life
        return cpu

    async def cursor_ab(worker, conc: int, n: int) -> dict:
        """Blocks of 100 requests alternating between the statement cursors re-used (this tree's
        `_cursor`) and a new cursor for every statement (psycopg's `conn.execute`, as before),
        in one process, so that the machine's drift cancels out."""
        from registry import async_database

        reused, fresh = async_database._cursor, lambda conn, statement: conn.cursor()
        cpu = {"reused": 0.0, "fresh": 0.0}
        for b in range(n // 100):
            for name in (("reused", "fresh") if b % 2 == 0 else ("fresh", "reused")):
                async_database._cursor = reused if name == "reused" else fresh
                t = time.process_time()
                await asyncio.gather(*(worker(k, 100 // conc) for k in range(conc)))
                cpu[name] += time.process_time() - t
        async_database._cursor = reused
        return cpu

    cpu = uvloop.run(main())
    done = sum(statuses.values())
    if isinstance(cpu, dict):
        per = done / len(cpu)
        print(json.dumps({"cpu_us": {k: v / per * 1e6 for k, v in cpu.items()}, "statuses": dict(statuses)}))
        return
    print(json.dumps({"cpu_us": cpu / max(1, done) * 1e6, "statuses": dict(statuses)}))


def _tree(ref: str) -> Path:
    from bench.gate import export_ref
    from bench.servers import REPO

    return REPO if ref == "HEAD" else export_ref(ref)


def measure(*, server_url: str, refs: list[str], rounds: int, requests: int, patients: int, concurrency: int,
            cursor_ab: bool = False) -> dict:
    from sqlalchemy import create_engine, text

    from bench.gate import _prepare
    from registry.database import normalise_url

    trees = {ref: _tree(ref) for ref in refs}
    base, _, _ = normalise_url(server_url).rpartition("/")
    name = f"nhr_bench_readpath_{int(time.time())}_{secrets.token_hex(2)}"
    admin = create_engine(normalise_url(server_url), isolation_level="AUTOCOMMIT")
    with admin.connect() as c:
        c.execute(text(f'CREATE DATABASE "{name}"'))
    url = f"{base}/{name}"
    per_round: list[dict] = []
    loads: list[float] = []
    try:
        with tempfile.TemporaryDirectory(prefix="nhr-bench-readpath-", ignore_cleanup_errors=True) as tmp:
            key_dir = str(Path(tmp) / "keys")
            token, ids, _ = _prepare(url, key_dir, patients)
            spec = Path(tmp) / "spec.json"
            spec.write_text(json.dumps({"token": token, "ids": ids, "requests": requests, "concurrency": concurrency,
                                        "cursor_ab": cursor_ab}))
            env = {**os.environ, "NHR_ENV": "test", "NHR_DATABASE_URL": url, "NHR_KEY_DIR": key_dir,
                   "NHR_TOKEN_TTL_SECONDS": "3600", "NHR_RATE_LIMIT_REQUESTS": "0", "NHR_IN_PROCESS_WORKER": "false",
                   "NHR_DEDUPE_INTERVAL_HOURS": "0"}
            env.pop("NHR_HOT_GATE", None)
            for i in range(rounds):
                loads.append(os.getloadavg()[0])
                got = {}
                for ref in (refs if i % 2 == 0 else refs[::-1]):
                    tree = trees[ref]
                    out = subprocess.run([sys.executable, str(HERE), "--child", str(spec)], cwd=tree,
                                         env={**env, "PYTHONPATH": str(tree)}, capture_output=True, text=True, timeout=600,
                                         check=False)
                    if out.returncode != 0:
                        raise RuntimeError(f"{ref}: {out.stderr[-2000:]}")
                    r = json.loads(out.stdout.strip().splitlines()[-1])
                    if set(r["statuses"]) != {"200"}:
                        raise RuntimeError(f"{ref}: answers other than 200: {r['statuses']}")
                    got[ref] = r["cpu_us"]
                per_round.append(got)
    finally:
        with admin.connect() as c:
            c.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()
    return {"rounds": per_round, "loads": loads, "patients": len(ids)}


def main(argv: list[str] | None = None) -> int:
    if argv is None and len(sys.argv) == 3 and sys.argv[1] == "--child":
        _child(sys.argv[2])
        return 0
    p = argparse.ArgumentParser(prog="python -m bench.readpath", description=__doc__.split("\n\n")[0])
    p.add_argument("--pg", default="postgresql://postgres@127.0.0.1:5432/postgres")
    p.add_argument("--refs", nargs="+", default=["e8621d1", "HEAD"], help="git refs; HEAD is this tree as it is")
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--requests", type=int, default=2000)
    p.add_argument("--patients", type=int, default=200)
    p.add_argument("--concurrency", type=int, default=8)
    p.add_argument("--cursor-ab", action="store_true", help="instead: in this tree only, blocks of requests alternating "
                   "between re-used statement cursors and a new cursor a statement, in one process")
    a = p.parse_args(argv)
    if a.cursor_ab:
        a.refs = ["HEAD"]
    r = measure(server_url=a.pg, refs=a.refs, rounds=a.rounds, requests=a.requests, patients=a.patients,
                concurrency=a.concurrency, cursor_ab=a.cursor_ab)
    if a.cursor_ab:
        rows = [x["HEAD"] for x in r["rounds"]]
        print(f"statement cursors A/B in one process, {a.rounds} rounds x {a.requests} requests, load average "
              f"{min(r['loads']):.1f} to {max(r['loads']):.1f}")
        for k in ("fresh", "reused"):
            print(f"{k:<7} CPU us a request: median {statistics.median(x[k] for x in rows):6.0f} "
                  f"(rounds {', '.join(f'{x[k]:.0f}' for x in rows)})")
        print(f"fresh / reused, per round, median {statistics.median(x['fresh'] / x['reused'] for x in rows):.3f}")
        return 0
    first = a.refs[0]
    print(f"audited read in-process, {a.rounds} rounds x {a.requests} requests, {a.concurrency} in flight, "
          f"{r['patients']} patients, load average {min(r['loads']):.1f} to {max(r['loads']):.1f}")
    for ref in a.refs:
        cpu = [x[ref] for x in r["rounds"]]
        ratio = statistics.median(x[first] / x[ref] for x in r["rounds"])
        print(f"{ref:<12} CPU us a request: median {statistics.median(cpu):6.0f} (rounds {', '.join(f'{c:.0f}' for c in cpu)}); "
              f"{first} / this, per round, median {ratio:.3f}")
    return 0


if __name__ == "__main__":
    if sys.path and Path(sys.path[0]).resolve() == HERE.parent:  # run as a script in another tree: not bench/ first
        sys.path.pop(0)
    sys.exit(main())
