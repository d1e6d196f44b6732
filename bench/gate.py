"""The hot gate (api/hot_gate.py, issue 17): the audited read and the search by B-form, before
(main) and after, as ratios to the trivial endpoint in the same run.

    python -m bench.gate [--pg SERVER_URL] [--rounds 6] [--duration 4] [--concurrency 32] [--workers 2]
                         [--patients 2000] [--before-ref main] [--profile]

Servers over one fresh PostgreSQL database (created on SERVER_URL, dropped at the end), each
`nhr serve --workers W` as the main benchmark runs the registry (NHR's access log on, the
per-principal rate limit off as in `python -m bench`): **before**, the code of git ref
`--before-ref` (default `main`, exported with `git archive` under .bench/, imported from there),
**hot** this tree, **cold** this tree with `NHR_HOT_GATE=false` (every route through FastAPI's
dependency resolution: what the hot gate alone buys), and the trivial FastAPI endpoint. One
clinic worker reads patients of its facility by id, and searches them by B-form. Every round runs
every (server, workload) pair once, the order reversed on odd rounds (A/B/B/A); the result is the
median over rounds of the per-round ratios (rate over the trivial rate of the same round) and of
the workers' CPU per request (which neighbours distort less than the rate). `--profile` adds one
measurement of the hot read with py-spy on its workers (GIL-holding samples, collapsed stacks
under .bench/).
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from datetime import UTC, datetime
from io import BytesIO
from pathlib import Path

from bench.servers import REPO

DEFAULT_SERVER = "postgresql://postgres@127.0.0.1:5432/postgres"
PASSWORD = "bench-gate-passphrase-2026"
FACILITY = "F-LAH-02"
WORKLOADS = ("read", "search")


def _bform() -> str:
    d = f"{secrets.randbelow(10**12):012d}"
    return f"9{d[:4]}-{d[4:11]}-{d[11]}"


def _prepare(url: str, key_dir: str, patients: int) -> tuple[str, list[str], list[str]]:
    """An initialised registry with one clinic worker and `patients` children -> (token, ids, B-forms)."""
    from fastapi.testclient import TestClient

    from api.app import create_app
    from registry import bootstrap
    from registry.runtime import Runtime
    from registry.settings import Settings
    from registry.users.schemas import UserCreate
    from registry.users.service import create_user

    rt = Runtime.build(Settings(env="test", database_url=url, key_dir=key_dir, audit={"seal_interval_seconds": 0},
                                reports={"refresh_interval_seconds": 0}, limits={"rate_limit_requests": 0},
                                tokens={"ttl_seconds": 3600}, linkage_check=False))
    bootstrap.init(rt)
    with rt.sessions.begin() as s:
        create_user(s, rt, UserCreate(username="clinic.bench", display_name="bench", password=PASSWORD,
                                      role="clinic_worker", scope_code=FACILITY))
    ids, bforms = [], []
    with TestClient(create_app(rt.settings, rt)) as c:
        token = c.post("/api/v1/auth/token", data={"username": "clinic.bench", "password": PASSWORD}).json()["access_token"]
        h = {"Authorization": f"Bearer {token}"}
        for i in range(patients):
            bform = _bform()
            r = c.post("/api/v1/patients", headers=h, json={
                "given_name": f"Bench{i}", "family_name": "Gate", "sex": "female", "birth_date": "2026-01-15",
                "bform": bform, "guardian": {"name": f"Guardian{i}", "relationship": "mother"}})
            if r.status_code == 201:
                ids.append(r.json()["id"])
                bforms.append(bform)
    rt.engine.dispose()
    return token, ids, bforms


def export_ref(ref: str) -> Path:
    """The tree of git ref `ref`, under .bench/ (ignored by git), to run the 'before' server from."""
    rev = subprocess.run(["git", "rev-parse", "--short", ref], cwd=REPO, check=True, capture_output=True, text=True).stdout.strip()
    dest = REPO / ".bench" / f"src-{rev}"
    if not (dest / "api" / "app.py").exists():
        raw = subprocess.run(["git", "archive", ref], cwd=REPO, check=True, capture_output=True).stdout
        dest.mkdir(parents=True, exist_ok=True)
        with tarfile.open(fileobj=BytesIO(raw)) as tar:
            tar.extractall(dest, filter="data")
    return dest


def _servers(url: str, key_dir: str, workers: int, before_src: Path):
    from bench.servers import Background, Server, _uvicorn, free_port, in_process_worker

    env = {**os.environ, "NHR_ENV": "test", "NHR_DATABASE_URL": url, "NHR_KEY_DIR": key_dir, "NHR_TOKEN_TTL_SECONDS": "3600",
           "NHR_RATE_LIMIT_REQUESTS": "0", "PYTHONUNBUFFERED": "1", "NHR_DEDUPE_INTERVAL_HOURS": "0"}
    for k in ("NHR_ARGON2_MEMORY_KIB", "NHR_ARGON2_TIME_COST", "NHR_HOT_GATE"):
        env.pop(k, None)
    background = []
    if not in_process_worker():  # as production runs: one `nhr worker` seals for all three (bench/servers.py)
        env["NHR_IN_PROCESS_WORKER"] = "false"
        background.append(Background(env))

    def serve(name, extra_env, cwd=REPO):
        port = free_port()
        cmd = [sys.executable, "-m", "cli.main", "serve", "--host", "127.0.0.1", "--port", str(port), "--workers", str(workers)]
        return Server(name, cmd, {**env, **extra_env}, port, "/readyz", cwd=cwd)

    # the 'before' tree first on the path: its api/ and registry/, not this tree's editable install
    before = serve("before", {"PYTHONPATH": str(before_src)}, cwd=before_src)
    hot = serve("hot", {})
    cold = serve("cold", {"NHR_HOT_GATE": "false"})
    port = free_port()
    trivial = Server("trivial", _uvicorn("bench.baselines:trivial_app", port, workers), dict(os.environ), port, "/healthz")
    return [before, hot, cold, trivial], background


def _imports_from(src: Path) -> bool:
    out = subprocess.run([sys.executable, "-c", "import api.app; print(api.app.__file__)"], cwd=src,
                         env={**os.environ, "PYTHONPATH": str(src)}, capture_output=True, text=True).stdout
    return out.strip().startswith(str(src))


def measure(*, server_url: str = DEFAULT_SERVER, rounds: int = 6, duration: float = 4, concurrency: int = 32,
            workers: int = 2, patients: int = 2000, before_ref: str = "main", profile: bool = False) -> dict:
    from sqlalchemy import create_engine, text

    from bench import loadgen
    from registry.database import normalise_url

    before_src = export_ref(before_ref)
    if not _imports_from(before_src):
        raise RuntimeError(f"the 'before' server would not import its code from {before_src}")
    base, _, _ = normalise_url(server_url).rpartition("/")
    name = f"nhr_bench_gate_{int(time.time())}_{secrets.token_hex(2)}"
    admin = create_engine(normalise_url(server_url), isolation_level="AUTOCOMMIT")
    with admin.connect() as c:
        c.execute(text(f'CREATE DATABASE "{name}"'))
    url = f"{base}/{name}"
    servers, background, per_round, prof, loads = [], [], [], None, []
    try:
        with tempfile.TemporaryDirectory(prefix="nhr-bench-gate-", ignore_cleanup_errors=True) as key_dir:
            token, ids, bforms = _prepare(url, key_dir, patients)
            servers, background = _servers(url, key_dir, workers, before_src)
            for s in servers:
                s.wait_ready(180)
            generator, _ = loadgen.choose()
            auth = {"Authorization": f"Bearer {token}"}
            specs = {"read": loadgen.RequestSpec("GET", "/api/v1/patients/{x}", choices=ids, headers=auth),
                     "search": loadgen.RequestSpec("POST", "/api/v1/patients/search", body='{"system":"bform","value":"{x}"}',
                                                   choices=bforms, headers={**auth, "Content-Type": "application/json"}),
                     "trivial": loadgen.RequestSpec("GET", "/")}
            pairs = [(s, w) for s in servers if s.name != "trivial" for w in WORKLOADS] + [(servers[-1], "trivial")]
            for s, w in pairs:  # warm-up: pools, key caches, statement caches
                loadgen.run(generator, s.base, specs[w], duration=1, concurrency=concurrency, nonce=0)
            for i in range(rounds):
                got = {}
                loads.append(os.getloadavg()[0])
                for s, w in (pairs if i % 2 == 0 else pairs[::-1]):
                    cpu = s.cpu_seconds()
                    r = loadgen.run(generator, s.base, specs[w], duration=duration, concurrency=concurrency, nonce=i + 1)
                    r["cpu_us"] = (s.cpu_seconds() - cpu) / max(1, r["requests"]) * 1e6
                    got[f"{s.name}/{w}"] = r
                per_round.append(got)
            if profile:
                from bench.pyspy import Profile

                hot = next(s for s in servers if s.name == "hot")
                p = Profile(hot.worker_pids(), REPO / ".bench" / "gate-profile", "hot-read")
                loadgen.run(generator, hot.base, specs["read"], duration=max(duration, 8), concurrency=concurrency, nonce=99)
                prof = p.stop()
            for s in servers + background:  # before their key directory goes
                s.stop()
    finally:
        for s in servers + background:
            s.stop()
        with admin.connect() as c:
            c.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()
    return {"generator": generator, "rounds": per_round, "profile": prof, "loads": loads, "patients": len(ids)}


def summary(result: dict) -> dict:
    rounds = result["rounds"]
    out = {}
    for key in rounds[0]:
        if key == "trivial/trivial":
            continue
        rows = [(r[key], r["trivial/trivial"]) for r in rounds]
        out[key] = {
            "rate": statistics.median(a["rate"] for a, _ in rows),
            "x_trivial": statistics.median(a["rate"] / t["rate"] for a, t in rows if t["rate"]),
            "p99_ms": statistics.median(a.get("p99_ms", float("nan")) for a, _ in rows),
            "cpu_us": statistics.median(a["cpu_us"] for a, _ in rows),
            "cpu_x_trivial": statistics.median(t["cpu_us"] / a["cpu_us"] for a, t in rows if a["cpu_us"]),
            "non2xx": sum(a["non2xx"] + a["errors"] for a, _ in rows),
        }
    t = [r["trivial/trivial"] for r in rounds]
    out["trivial/trivial"] = {"rate": statistics.median(x["rate"] for x in t), "cpu_us": statistics.median(x["cpu_us"] for x in t),
                              "p99_ms": statistics.median(x.get("p99_ms", float("nan")) for x in t)}
    for w in WORKLOADS:  # paired, per round: after over before
        for after in ("hot", "cold"):
            ratios = [r[f"{after}/{w}"]["rate"] / r[f"before/{w}"]["rate"] for r in rounds if r[f"before/{w}"]["rate"]]
            cpu = [r[f"before/{w}"]["cpu_us"] / r[f"{after}/{w}"]["cpu_us"] for r in rounds if r[f"{after}/{w}"]["cpu_us"]]
            out[f"{after}/{w}"]["x_before"] = statistics.median(ratios)
            out[f"{after}/{w}"]["cpu_x_before"] = statistics.median(cpu)
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.gate", description=__doc__.split("\n\n")[0])
    p.add_argument("--pg", default=DEFAULT_SERVER, help=f"PostgreSQL server to create the database on ({DEFAULT_SERVER})")
    p.add_argument("--rounds", type=int, default=6)
    p.add_argument("--duration", type=float, default=4, help="seconds per measurement")
    p.add_argument("--concurrency", type=int, default=32)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--patients", type=int, default=2000)
    p.add_argument("--before-ref", default="main", help="git ref of the 'before' server (default main)")
    p.add_argument("--profile", action="store_true", help="py-spy on the hot server's workers during one more read")
    a = p.parse_args(argv)
    started = datetime.now(UTC)
    r = measure(server_url=a.pg, rounds=a.rounds, duration=a.duration, concurrency=a.concurrency, workers=a.workers,
                patients=a.patients, before_ref=a.before_ref, profile=a.profile)
    out = REPO / ".bench" / f"gate-{started:%Y%m%dT%H%M}.json"
    out.write_text(json.dumps(r, indent=1, default=str))
    s = summary(r)
    print(f"hot gate, {started:%Y-%m-%d %H:%M} UTC, {a.rounds} rounds x {a.duration:g} s, {a.concurrency} connections, "
          f"{a.workers} workers, {r['patients']} patients, generator {r['generator']}, "
          f"load average at the rounds' start {min(r['loads']):.1f} to {max(r['loads']):.1f}")
    print(f"trivial: {s['trivial/trivial']['rate']:.0f}/s, {s['trivial/trivial']['cpu_us']:.0f} us CPU a request")
    print("server/workload   rate/s  x trivial  p99 ms  CPU us  CPU x trivial  x before (rate)  x before (CPU)  non-2xx")
    for key, v in s.items():
        if key == "trivial/trivial":
            continue
        xb = f"{v['x_before']:>15.2f}  {v['cpu_x_before']:>14.2f}" if "x_before" in v else f"{'-':>15}  {'-':>14}"
        print(f"{key:<16} {v['rate']:>7.0f}  {v['x_trivial']:>9.3f}  {v['p99_ms']:>6.1f}  {v['cpu_us']:>6.0f}  "
              f"{v['cpu_x_trivial']:>13.3f}  {xb}  {v['non2xx']:>7}")
    if r["profile"]:
        prof = r["profile"]
        print("profile (hot read, GIL samples):", prof.get("note") or "", prof.get("samples"))
        for k, v in (prof.get("shares") or {}).items():
            print(f"  {v:6.1%}  {k}")
        for k, v in prof.get("top_leaves") or []:
            print(f"  {v:6.1%}  {k}")
        print("  files:", *prof.get("files", []))
    return 0


if __name__ == "__main__":
    sys.exit(main())
