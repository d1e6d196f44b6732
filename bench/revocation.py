"""The cost of revocable tokens (issue 16 item 5): the audited read with the per-request token
generation check (registry/users/revocation.py) against the same read without it, over HTTP.

    python -m bench.revocation [--pg SERVER_URL] [--rounds 6] [--duration 4] [--concurrency 32] [--workers 2]

Two uvicorn servers over one fresh PostgreSQL database (created on SERVER_URL, default the local
server, and dropped at the end): `api.main:app` as served, and `unchecked_app` below, the same app
with the check replaced by one that accepts every token (this module only: there is no setting
that turns the check off). One clinic worker reads patients of its facility by id. Rounds are
interleaved A/B, B/A; the result is the median of the per-round rate ratios (checked over
unchecked) and of the per-request CPU ratios (the workers' CPU seconds over the requests served,
which a shared machine distorts less than the rate). Target: the checked read within 5% (>= 0.95).

With one principal the check reads the database about twice a second per worker; with many
distinct principals it reads at most that often per principal and worker.
"""

from __future__ import annotations

import argparse
import os
import secrets
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime

DEFAULT_SERVER = "postgresql://postgres@127.0.0.1:5432/postgres"
PASSWORD = "bench-revocation-passphrase-2026"
FACILITY = "F-LAH-02"


def unchecked_app():
    """`uvicorn --factory bench.revocation:unchecked_app`: the registry without the generation check."""
    import api.deps
    from api.main import app

    async def accept_all(rt, user_id, claims) -> bool:
        return True

    api.deps._current_generation = accept_all
    return app


def _prepare(url: str, key_dir: str, patients: int) -> tuple[str, list[str]]:
    """An initialised registry with one clinic worker and `patients` children of its facility -> (token, ids)."""
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
    ids = []
    with TestClient(create_app(rt.settings, rt)) as c:
        token = c.post("/api/v1/auth/token", data={"username": "clinic.bench", "password": PASSWORD}).json()["access_token"]
        h = {"Authorization": f"Bearer {token}"}
        for i in range(patients):
            r = c.post("/api/v1/patients", headers=h, json={
                "given_name": f"Bench{i}", "family_name": "Revocation", "sex": "female", "birth_date": "2026-01-15",
                "guardian": {"name": f"Guardian{i}", "relationship": "mother"}})
            assert r.status_code == 201, r.status_code
            ids.append(r.json()["id"])
    rt.engine.dispose()
    return token, ids


def _servers(url: str, key_dir: str, workers: int):
    from bench.servers import Server, _uvicorn, free_port

    env = {**os.environ, "NHR_ENV": "test", "NHR_DATABASE_URL": url, "NHR_KEY_DIR": key_dir, "NHR_TOKEN_TTL_SECONDS": "3600",
           "NHR_RATE_LIMIT_REQUESTS": "0", "PYTHONUNBUFFERED": "1"}
    a, b = free_port(), free_port()
    checked = Server("checked", _uvicorn("api.main:app", a, workers), env, a, "/readyz")
    unchecked = Server("unchecked", [*_uvicorn("bench.revocation:unchecked_app", b, workers), "--factory"], env, b, "/readyz")
    return checked, unchecked


def measure(*, server_url: str = DEFAULT_SERVER, rounds: int = 6, duration: float = 4, concurrency: int = 32,
            workers: int = 2, patients: int = 200) -> dict:
    from sqlalchemy import create_engine, text

    from bench import loadgen
    from registry.database import normalise_url

    base, _, _ = normalise_url(server_url).rpartition("/")
    name = f"nhr_bench_revocation_{int(time.time())}_{secrets.token_hex(2)}"
    admin = create_engine(normalise_url(server_url), isolation_level="AUTOCOMMIT")
    with admin.connect() as c:
        c.execute(text(f'CREATE DATABASE "{name}"'))
    url = f"{base}/{name}"
    servers = []
    try:
        with tempfile.TemporaryDirectory(prefix="nhr-bench-revocation-") as key_dir:
            token, ids = _prepare(url, key_dir, patients)
            servers = list(_servers(url, key_dir, workers))
            for s in servers:
                s.wait_ready(120)
            generator, _ = loadgen.choose()
            spec = loadgen.RequestSpec("GET", "/api/v1/patients/{x}", choices=ids,
                                       headers={"Authorization": f"Bearer {token}"})
            for s in servers:  # warm-up: pools, key caches
                loadgen.run(generator, s.base, spec, duration=1, concurrency=concurrency, nonce=0)
            per_round = []
            for i in range(rounds):
                order = servers if i % 2 == 0 else servers[::-1]
                got = {}
                for s in order:
                    cpu = s.cpu_seconds()
                    r = loadgen.run(generator, s.base, spec, duration=duration, concurrency=concurrency, nonce=i + 1)
                    r["cpu_us"] = (s.cpu_seconds() - cpu) / max(1, r["requests"]) * 1e6
                    got[s.name] = r
                per_round.append(got)
    finally:
        for s in servers:
            s.stop()
        with admin.connect() as c:
            c.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()
    rate = [r["checked"]["rate"] / r["unchecked"]["rate"] for r in per_round if r["unchecked"]["rate"]]
    cpu = [r["unchecked"]["cpu_us"] / r["checked"]["cpu_us"] for r in per_round if r["checked"]["cpu_us"]]
    return {"generator": generator, "rounds": per_round, "rate_ratio": statistics.median(rate),
            "cpu_ratio": statistics.median(cpu), "rate_ratios": rate,
            "refused": sum(r[k]["non2xx"] + r[k]["errors"] for r in per_round for k in r)}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.revocation", description=__doc__.split("\n\n")[0])
    p.add_argument("--pg", default=DEFAULT_SERVER, help=f"PostgreSQL server to create the database on ({DEFAULT_SERVER})")
    p.add_argument("--rounds", type=int, default=6)
    p.add_argument("--duration", type=float, default=4, help="seconds per measurement")
    p.add_argument("--concurrency", type=int, default=32)
    p.add_argument("--workers", type=int, default=2)
    a = p.parse_args(argv)
    started = datetime.now(UTC)
    r = measure(server_url=a.pg, rounds=a.rounds, duration=a.duration, concurrency=a.concurrency, workers=a.workers)
    print(f"revocation check, {started:%Y-%m-%d %H:%M} UTC, {a.rounds} rounds x {a.duration:g} s, {a.concurrency} connections, "
          f"{a.workers} workers, generator {r['generator']}, load average {os.getloadavg()[0]:.1f}")
    print("round  checked/s  unchecked/s  ratio  checked CPU us  unchecked CPU us")
    for i, rr in enumerate(r["rounds"]):
        c, u = rr["checked"], rr["unchecked"]
        print(f"{i + 1:>5}  {c['rate']:>9.0f}  {u['rate']:>11.0f}  {c['rate'] / u['rate']:>5.2f}  {c['cpu_us']:>14.0f}  "
              f"{u['cpu_us']:>16.0f}")
    verdict = "pass" if r["rate_ratio"] >= 0.95 else "short"
    print(f"median rate ratio {r['rate_ratio']:.3f}, median CPU-per-request ratio {r['cpu_ratio']:.3f} "
          f"(target: rate ratio >= 0.95: {verdict}); refused or failed requests: {r['refused']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
