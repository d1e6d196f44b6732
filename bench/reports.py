"""`python -m bench.reports [--doses N] [--keep] [--server-url URL] [--database-url URL]`: the coverage-report target of
DESIGN.md section 6 on PostgreSQL: a full rebuild of the maintained aggregates over N doses
(default 10 million) and the latency of coverage reports for the nation, a province and a
district (p50/p99), plus an incremental refresh of 1,000 changed children.

The population is generated in SQL (`generate_series`), not through the registry's codec:
reports read only clear columns, so the encrypted columns hold a placeholder and this takes a
few minutes instead of the encrypting loader's much longer run. Children are spread over one
facility per tehsil and union council of the Pakistan hierarchy, born over three years, with
the EPI doses at their due ages plus a random delay and a dropout of about 8% a visit.
`--keep` keeps the database and prints its URL; `--database-url URL` measures such a kept
database again without regenerating it (each measurement rebuilds the aggregates and folds in
1,000 queued children, so it changes nothing a later measurement depends on).
Nothing here is a test: it prints numbers and asserts nothing about them.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from datetime import date

from sqlalchemy import text

DEFAULT_SERVER = "postgresql://postgres@127.0.0.1:5432/postgres"
ITEMS = [  # (vaccine, dose, due age in days, share of children given it)
    ("BCG", 1, 0, 0.93), ("OPV", 0, 0, 0.9), ("HEPB", 1, 0, 0.6), ("OPV", 1, 42, 0.9), ("PENTA", 1, 42, 0.92),
    ("PCV", 1, 42, 0.9), ("ROTA", 1, 42, 0.88), ("OPV", 2, 70, 0.85), ("PENTA", 2, 70, 0.85), ("PCV", 2, 70, 0.84),
    ("ROTA", 2, 70, 0.82), ("OPV", 3, 98, 0.8), ("PENTA", 3, 98, 0.8), ("PCV", 3, 98, 0.79), ("IPV", 1, 98, 0.75),
    ("MR", 1, 270, 0.7), ("TCV", 1, 270, 0.65), ("MR", 2, 450, 0.55),
]
DOSES_PER_CHILD = sum(p for *_, p in ITEMS)


def populate(rt, doses: int, log=print) -> tuple[int, int]:
    children = int(doses / DOSES_PER_CHILD)
    values = ", ".join(f"('{v}', {n}, {age}, {p})" for v, n, age, p in ITEMS)
    with rt.engine.begin() as c:
        c.execute(text("""INSERT INTO facilities (code, name, kind, jurisdiction_code, province, district, active)
            SELECT 'FB-' || code, 'Bench ' || name, 'bhu', code, province, district, true FROM jurisdictions
            WHERE level IN ('tehsil', 'union_council') ON CONFLICT DO NOTHING"""))
    t0 = time.perf_counter()
    with rt.engine.begin() as c:
        # A throwaway database: secondary indexes are dropped during the load and rebuilt after
        # it, and foreign-key triggers are skipped (replica role; the server runs as postgres).
        dropped = c.execute(text("""SELECT indexname, indexdef FROM pg_indexes i WHERE schemaname = 'public'
            AND tablename IN ('patients', 'immunizations') AND NOT EXISTS (SELECT 1 FROM pg_constraint k
            WHERE k.conindid = format('%I.%I', i.schemaname, i.indexname)::regclass)""")).all()
        for name, _ in dropped:
            c.execute(text(f'DROP INDEX "{name}"'))
        c.execute(text("SET LOCAL synchronous_commit = off"))
        c.execute(text("SET LOCAL session_replication_role = replica"))
        c.execute(text("""CREATE TEMP TABLE bench_fac AS SELECT row_number() OVER (ORDER BY code) - 1 AS n, code, province, district
                          FROM facilities"""))
        nf = c.execute(text("SELECT count(*) FROM bench_fac")).scalar_one()
        c.execute(text(f"""INSERT INTO patients (id, version, custodian, province, district, home_facility, sex, birth_date,
              given_name_ct, health_id_ct, created_at, updated_at, created_by)
            SELECT md5('p' || g)::uuid, 1, f.province, f.province, f.district, f.code,
                   CASE WHEN g % 2 = 0 THEN 'female' ELSE 'male' END, DATE '{date.today().isoformat()}' - (g * 7919 % 1095)::int,
                   '\\x00'::bytea, '\\x00'::bytea, now(), now(), '00000000-0000-5000-8000-00000000be4c'
            FROM generate_series(1::bigint, {children}) g JOIN bench_fac f ON f.n = g % {nf}"""))
        log(f"  {children} children in {time.perf_counter() - t0:.1f} s")
        c.execute(text(f"""INSERT INTO immunizations (id, version, patient_id, custodian, province, district, facility, vaccine,
              dose_number, date_given, performer_id, status, recorded_at)
            SELECT gen_random_uuid(), 1, p.id, p.custodian, p.province, p.district, p.home_facility, v.vaccine, v.dose,
                   p.birth_date + v.age + floor(random() * 30)::int, '00000000-0000-5000-8000-00000000be4c', 'completed', now()
            FROM patients p CROSS JOIN (VALUES {values}) AS v(vaccine, dose, age, share)
            WHERE random() < v.share AND p.birth_date + v.age + 30 <= CURRENT_DATE"""))
        c.execute(text("SET LOCAL maintenance_work_mem = '256MB'"))
        for _, ddl in dropped:
            c.execute(text(ddl))
    with rt.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as c:
        c.execute(text("VACUUM (ANALYZE) patients, immunizations, facilities"))
        n = c.execute(text("SELECT count(*) FROM immunizations")).scalar_one()
    log(f"  {n} doses in {time.perf_counter() - t0:.1f} s")
    return children, n


def _percentile(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(q * (len(xs) - 1))))]


def measure(rt, runs: int, log=print) -> dict:
    from registry.reports import aggregate, coverage

    out: dict = {}
    today = date.today()
    with rt.sessions.begin() as s:
        t0 = time.perf_counter()
        facts = aggregate.rebuild(s, today)
    out["rebuild_seconds"] = round(time.perf_counter() - t0, 2)
    out["children"] = facts["children"]
    with rt.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as c:
        c.execute(text("ANALYZE report_child_status, report_coverage_counts"))
        out["count_rows"] = c.execute(text("SELECT count(*) FROM report_coverage_counts")).scalar_one()
    log(f"  full rebuild: {out['rebuild_seconds']} s ({out['children']} children, {out['count_rows']} count rows)")
    cohort = coverage.parse_cohort(str(today.year - 1))
    for label, code in (("nation", "PK"), ("province", "PK-PB"), ("district", "PK-PB-LAH")):
        times = []
        for _ in range(runs):
            with rt.sessions() as s:
                t0 = time.perf_counter()
                tree = coverage.Tree.load(s)
                coverage.build(s, tree.nodes[code], tree, cohort, today, "registered", 5)
                times.append((time.perf_counter() - t0) * 1000)
        out[f"{label}_ms"] = {"p50": round(statistics.median(times), 1), "p99": round(_percentile(times, 0.99), 1)}
        log(f"  report {label:<9} p50 {out[f'{label}_ms']['p50']} ms  p99 {out[f'{label}_ms']['p99']} ms ({runs} runs)")
    with rt.sessions.begin() as s:
        s.execute(text("INSERT INTO report_dirty_patients (patient_id) SELECT id FROM patients ORDER BY id LIMIT 1000"))
    with rt.sessions.begin() as s:
        t0 = time.perf_counter()
        aggregate.refresh(s, today, 1000)
    out["refresh_1000_ms"] = round((time.perf_counter() - t0) * 1000, 1)
    log(f"  incremental refresh of 1,000 changed children: {out['refresh_1000_ms']} ms")
    return out


def run(server_url: str, doses: int, runs: int, keep: bool = False, log=print, database_url: str | None = None) -> dict:
    """Generate a population in a new database and measure it; with `database_url`, measure an
    existing one (a database kept by an earlier `--keep` run) without generating anything."""
    from bench.population import create_database, drop_database, settings_for
    from registry import bootstrap
    from registry.runtime import Runtime

    if database_url is not None:
        with tempfile.TemporaryDirectory(prefix="nhr-bench-reports-keys-") as key_dir:
            rt = Runtime.build(settings_for(database_url, key_dir))
            rt.keyring.create_missing = True  # reports decrypt nothing; the runtime only wants a keyring
            with rt.engine.connect() as c:
                n = c.execute(text("SELECT count(*) FROM immunizations")).scalar_one()
            log(f"measuring the existing database ({n} doses) ...")
            result = {"doses": n, **measure(rt, runs, log)}
            rt.engine.dispose()
            return result
    name = f"nhr_bench_reports_{int(time.time())}"
    url = create_database(server_url, name)
    key_dir = tempfile.mkdtemp(prefix="nhr-bench-reports-keys-")
    try:
        rt = Runtime.build(settings_for(url, key_dir))
        rt.keyring.create_missing = True
        bootstrap.init(rt)
        log(f"generating about {doses} doses in {name} ...")
        children, n = populate(rt, doses, log)
        result = {"doses": n, **measure(rt, runs, log)}
        rt.engine.dispose()
        return result
    finally:
        if keep:
            log(f"kept database {name} (key dir {key_dir}); measure it again with --database-url {url}")
        else:
            drop_database(server_url, name)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.reports", description="Coverage report rebuild and latency on PostgreSQL.")
    p.add_argument("--doses", type=int, default=10_000_000, help="doses to generate (default 10,000,000)")
    p.add_argument("--runs", type=int, default=50, help="report runs per level (default 50)")
    p.add_argument("--server-url", default=DEFAULT_SERVER, help=f"PostgreSQL server to create the database on ({DEFAULT_SERVER})")
    p.add_argument("--keep", action="store_true", help="keep the database afterwards")
    p.add_argument("--database-url", help="measure this database (kept by an earlier --keep run) instead of generating one")
    a = p.parse_args(argv)
    result = run(a.server_url, a.doses, a.runs, a.keep, database_url=a.database_url)
    print(result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
