"""Registration with the duplicate check vs without it, through the registration service
(registry/patients/service.register: validation, encryption, blind index, audit, commit), on a
database holding a synthetic province with blocking keys. A/B interleaved rounds, the ratio of
rates per round, median. Service calls, not HTTP: the HTTP floor is the same in both arms, so
over HTTP the ratio is closer to 1 than measured here (this is the conservative figure).

Database: a fresh SQLite file by default; `--pg URL` (a server URL) creates a database on that
PostgreSQL server and drops it afterwards.
"""

from __future__ import annotations

import random
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


if __name__ == "__main__":
    import argparse

    ap = argparse.ArgumentParser()
    ap.add_argument("--scale", type=int, default=20_000)
    ap.add_argument("--pg", default=None)
    a = ap.parse_args()
    print(measure(scale=a.scale, pg=a.pg))
