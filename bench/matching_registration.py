"""Registration with the duplicate check vs without it, through the registration service
(registry/patients/service.register: validation, encryption, blind index, audit, commit), on a
database holding a synthetic province with blocking keys. A/B interleaved rounds, the ratio of
rates per round, median. Service calls, not HTTP: the HTTP floor is the same in both arms, so
over HTTP the ratio is closer to 1 than measured here (this is the conservative figure).

Database: a fresh SQLite file by default; `--pg URL` (a server URL) creates a database on that
PostgreSQL server and drops it afterwards.

`--http` (with `--pg`): the same comparison over HTTP, POST /api/v1/patients to two `nhr serve`
servers on one database, one with NHR_LINKAGE_CHECK=1 and one with 0 (on PostgreSQL the API
registers on the event loop, registry/patients/async_register.py; the service calls above run
the sync path, registry/patients/service.register). The service-level figure is the stricter.
"""

from __future__ import annotations

import random
import sys
import statistics
import tempfile
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

from sqlalchemy import create_engine, insert, text


def _load(rt, n: int, seed: int) -> None:
    from registry.demo import linkage_population as population
    from registry.linkage import records
    from registry.linkage.match_models import LinkKey
    from registry.patients import codec
    from registry.patients.models import Patient, PatientIdentifierIndex
    from registry.identifiers import new_health_id

    now = datetime.now(UTC)
    p_rows, i_rows, k_rows = [], [], []
    for r in population.generate(n, seed=seed, province="PK-PB"):
        pid = uuid.UUID(r["unique_id"])
        plain = {"given_name": r["given_name"], "family_name": r["family_name"], "guardian_name": r["guardian_name"],
                 "guardian_cnic": r["guardian_cnic"], "phone": r["phone"], "address": None, "health_id": new_health_id(),
                 "bform": None, "cnic": None}
        p_rows.append({"id": pid, "version": 1, "custodian": "PK-PB", "province": r["province"], "district": r["district"],
                       "home_facility": r["facility"], "sex": r["sex"], "birth_date": r["birth_date"],
                       "guardian_relationship": "mother", "created_at": now, "updated_at": now, "created_by": uuid.uuid4(),
                       **codec.encrypt_fields(rt.cipher, "PK-PB", pid, {c: plain.get(c) for c in codec.ENCRYPTED})})
        i_rows += codec.index_rows(rt.indexer, "PK-PB", pid, plain)
        rec = records.from_input(given_name=r["given_name"], family_name=r["family_name"], guardian_name=r["guardian_name"],
                                 guardian_cnic=r["guardian_cnic"], bform=None, phone=r["phone"], birth_date=r["birth_date"],
                                 sex=r["sex"], facility=r["facility"], district=r["district"], province=r["province"])
        k_rows += records.key_rows(rt.indexer, "PK-PB", pid, rec)
    with rt.sessions.begin() as s:
        for table, rows in ((Patient.__table__, p_rows), (PatientIdentifierIndex.__table__, i_rows), (LinkKey.__table__, k_rows)):
            for i in range(0, len(rows), 2000):
                s.execute(insert(table), rows[i:i + 2000])
    if rt.engine.dialect.name == "postgresql":  # statistics after a bulk load, as autovacuum would gather them
        with rt.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as c:
            c.execute(text("ANALYZE"))


def _register_many(rt, principal, children: list, check: bool) -> float:
    from registry.context import ServiceContext
    from registry.errors import Conflict
    from registry.patients import service
    from security.access.principal import AccessContext
    from security.audit.trail import AuditTrail

    object.__setattr__(rt.settings, "linkage_check", check)
    t = time.perf_counter()
    for body in children:
        trail = AuditTrail(AccessContext(principal, "TREAT", uuid.uuid4().hex, "bench"))
        try:
            with rt.sessions.begin() as s:
                service.register(ServiceContext(s, rt, trail), body)
        except Conflict:
            pass  # a synthetic child that happens to look like one already there: the check's work was done
    return len(children) / (time.perf_counter() - t)


def measure(*, scale: int = 20_000, rounds: int = 5, per_round: int = 150, pg: str | None = None) -> tuple[float, str]:
    from registry import bootstrap
    from registry.demo import linkage_population as population
    from registry.patients.schemas import PatientCreate
    from registry.runtime import Runtime
    from registry.settings import Settings
    from security.access.principal import Principal, Scope

    tmp = Path(tempfile.mkdtemp(prefix="nhr-match-bench-"))
    db_name = f"nhr_match_{datetime.now(UTC):%Y%m%d%H%M%S}"
    url = f"sqlite:///{tmp / 'bench.sqlite3'}"
    admin = None
    if pg:
        admin = create_engine(pg, isolation_level="AUTOCOMMIT")
        with admin.connect() as c:
            c.execute(text(f'CREATE DATABASE "{db_name}"'))
        url = pg.rsplit("/", 1)[0] + f"/{db_name}"
    settings = Settings(env="development", database_url=url, key_dir=tmp / "keyring",
                        passwords={"argon2_memory_kib": 1024, "argon2_time_cost": 1},
                        audit={"seal_interval_seconds": 0}, reports={"refresh_interval_seconds": 0})
    rt = Runtime.build(settings, provisioning=True)
    try:
        bootstrap.init(rt)
        _load(rt, scale, seed=41)
        principal = Principal.build(uuid.uuid4(), "bench.clinic", "clinic_worker",
                                    Scope("facility", "F-LAH-02", "PK-PB", "PK-PB-LAH"))
        fresh = population.generate(rounds * per_round * 2 + 50, duplicate_share=0.0, seed=99, province="PK-PB")
        bodies = [PatientCreate(given_name=r["given_name"], family_name=r["family_name"], sex=r["sex"],
                                birth_date=r["birth_date"], guardian={"name": r["guardian_name"], "relationship": "mother",
                                                                      "cnic": r["guardian_cnic"]},
                                phone=r["phone"]) for r in fresh]
        random.Random(3).shuffle(bodies)
        _register_many(rt, principal, bodies[:50], True)  # warm-up
        pos, ratios, on_rates, off_rates = 50, [], [], []
        for k in range(rounds):
            arms = [True, False] if k % 2 == 0 else [False, True]
            rates = {}
            for arm in arms:
                rates[arm] = _register_many(rt, principal, bodies[pos:pos + per_round], arm)
                pos += per_round
            ratios.append(rates[True] / rates[False])
            on_rates.append(rates[True])
            off_rates.append(rates[False])
        ratio = statistics.median(ratios)
        where = "PostgreSQL" if pg else "SQLite"
        return ratio, (f"{where}, {scale:,} children of PK-PB on file, {rounds} A/B rounds x {per_round} registrations; "
                       f"median {statistics.median(on_rates):.0f}/s with the check, "
                       f"{statistics.median(off_rates):.0f}/s without; service calls, one process")
    finally:
        rt.engine.dispose()
        if admin is not None:
            with admin.connect() as c:
                c.execute(text(f'DROP DATABASE IF EXISTS "{db_name}" WITH (FORCE)'))
            admin.dispose()


def _post_all(base: str, token: str, bodies: list[str], clients: int) -> tuple[float, dict[int, int]]:
    """POST every body to /api/v1/patients from `clients` threads (one keep-alive connection
    each): (registrations a second, count by status)."""
    import http.client
    import threading
    from collections import Counter

    host, port = base.removeprefix("http://").split(":")
    todo, statuses, lock = list(bodies), Counter(), threading.Lock()
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}

    def client() -> None:
        conn = http.client.HTTPConnection(host, int(port), timeout=60)
        while True:
            with lock:
                if not todo:
                    break
                body = todo.pop()
            conn.request("POST", "/api/v1/patients", body, headers)
            r = conn.getresponse()
            r.read()
            with lock:
                statuses[r.status] += 1
        conn.close()

    threads = [threading.Thread(target=client) for _ in range(clients)]
    t = time.perf_counter()
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    return len(bodies) / (time.perf_counter() - t), dict(statuses)


def measure_http(*, pg: str, scale: int = 20_000, rounds: int = 5, per_round: int = 300, workers: int = 1,
                 clients: int = 4) -> tuple[float, str]:
    """The same comparison over HTTP: two `nhr serve` servers on one database and key directory,
    NHR_LINKAGE_CHECK=1 and =0 (the same argon2 parameters as `measure`, no in-process worker),
    POST /api/v1/patients from `clients` threads, A/B interleaved rounds, median of the ratios."""
    import json
    import os
    import urllib.parse
    import urllib.request

    from bench.servers import Server, free_port
    from registry import bootstrap
    from registry.demo import linkage_population as population
    from registry.runtime import Runtime
    from registry.settings import Settings
    from registry.users.schemas import UserCreate
    from registry.users.service import create_user

    tmp = Path(tempfile.mkdtemp(prefix="nhr-match-bench-"))
    db_name = f"nhr_match_{datetime.now(UTC):%Y%m%d%H%M%S}"
    admin = create_engine(pg, isolation_level="AUTOCOMMIT")
    with admin.connect() as c:
        c.execute(text(f'CREATE DATABASE "{db_name}"'))
    url = pg.rsplit("/", 1)[0] + f"/{db_name}"
    argon2 = {"argon2_memory_kib": 1024, "argon2_time_cost": 1}
    rt = Runtime.build(Settings(env="test", database_url=url, key_dir=tmp / "keyring", passwords=argon2,
                                audit={"seal_interval_seconds": 0}, reports={"refresh_interval_seconds": 0}),
                       provisioning=True)
    servers: list[Server] = []
    try:
        bootstrap.init(rt)
        _load(rt, scale, seed=41)
        password = uuid.uuid4().hex + "Aa1!"
        with rt.sessions.begin() as s:
            create_user(s, rt, UserCreate(username="bench.clinic", display_name="Benchmark vaccinator", password=password,
                                          role="clinic_worker", scope_code="F-LAH-02"))
        rt.engine.dispose()
        for check in (True, False):
            port = free_port()
            env = {**os.environ, "NHR_ENV": "test", "NHR_DATABASE_URL": url, "NHR_KEY_DIR": str(tmp / "keyring"),
                   "NHR_TOKEN_TTL_SECONDS": "3600", "NHR_RATE_LIMIT_REQUESTS": "0", "PYTHONUNBUFFERED": "1",
                   "NHR_ARGON2_MEMORY_KIB": "1024", "NHR_ARGON2_TIME_COST": "1", "NHR_IN_PROCESS_WORKER": "false",
                   "NHR_AUDIT_SEAL_INTERVAL_SECONDS": "0", "NHR_REPORT_REFRESH_INTERVAL_SECONDS": "0",
                   "NHR_LINKAGE_CHECK": "1" if check else "0"}
            cmd = [sys.executable, "-m", "cli.main", "serve", "--host", "127.0.0.1", "--port", str(port),
                   "--workers", str(workers)]
            servers.append(Server("check" if check else "nocheck", cmd, env, port, "/readyz"))
        for srv in servers:
            srv.wait_ready()
        login = urllib.parse.urlencode({"username": "bench.clinic", "password": password}).encode()
        with urllib.request.urlopen(urllib.request.Request(servers[0].base + "/api/v1/auth/token", data=login), timeout=30) as r:
            token = json.loads(r.read())["access_token"]
        fresh = population.generate(rounds * per_round * 2 + 100, duplicate_share=0.0, seed=99, province="PK-PB")
        bodies = [json.dumps({"given_name": r["given_name"], "family_name": r["family_name"], "sex": r["sex"],
                              "birth_date": r["birth_date"].isoformat(), "phone": r["phone"],
                              "guardian": {"name": r["guardian_name"], "relationship": "mother", "cnic": r["guardian_cnic"]}})
                  for r in fresh]
        random.Random(3).shuffle(bodies)
        by_arm = {True: servers[0], False: servers[1]}
        for arm in (True, False):  # warm-up: connections, prepared statements, the model cache
            _post_all(by_arm[arm].base, token, bodies[:50] if arm else bodies[50:100], clients)
        pos, ratios, on_rates, off_rates, statuses = 100, [], [], [], {}
        for k in range(rounds):
            rates = {}
            for arm in ([True, False] if k % 2 == 0 else [False, True]):
                rates[arm], st = _post_all(by_arm[arm].base, token, bodies[pos:pos + per_round], clients)
                pos += per_round
                for code, n in st.items():
                    statuses[code] = statuses.get(code, 0) + n
            ratios.append(rates[True] / rates[False])
            on_rates.append(rates[True])
            off_rates.append(rates[False])
        ratio = statistics.median(ratios)
        return ratio, (f"HTTP, PostgreSQL, {scale:,} children of PK-PB on file, {rounds} A/B rounds x {per_round} "
                       f"POST /api/v1/patients, {clients} clients, {workers} worker(s) a server; median "
                       f"{statistics.median(on_rates):.0f}/s with the check, {statistics.median(off_rates):.0f}/s without; "
                       f"ratios {[round(x, 2) for x in ratios]}; statuses {statuses}")
    finally:
        for srv in servers:
            srv.stop()
        with admin.connect() as c:
            c.execute(text(f'DROP DATABASE IF EXISTS "{db_name}" WITH (FORCE)'))
        admin.dispose()


if __name__ == "__main__":
    import argparse

    ap = argparse.ArgumentParser()
    ap.add_argument("--scale", type=int, default=20_000)
    ap.add_argument("--pg", default=None)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--http", action="store_true", help="over HTTP: two servers, with and without the check (needs --pg)")
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--clients", type=int, default=4)
    a = ap.parse_args()
    if a.http:
        print(measure_http(pg=a.pg, scale=a.scale, rounds=a.rounds, workers=a.workers, clients=a.clients))
    else:
        print(measure(scale=a.scale, pg=a.pg, rounds=a.rounds))
