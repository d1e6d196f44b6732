"""`python -m bench.imports`: native dose import and FHIR validation rates (DESIGN section 6).

- **Native dose import** (`nhr import`'s own code, `registry.bulk.importer.run`, on a CSV of
  doses: parse, validate, resolve the patients, check ids and duplicate doses, write with COPY,
  one audit event per chunk with its subjects, the run's progress) against the **database floor**:
  the CSV is a realistic mixed history (issue 12): half the doses administered here with EPI
  codes and dose numbers, half reported (home cards, registers, other systems, abroad, recall)
  with product-level CVX codes (hexavalent DTaP-IPV-Hib-HepB writing a PENTA row and an IPV
  component, PCV13, Rotarix, MMR, ...), a third of those without a dose number (inferred), and
  every dose judged by the schedule and the vocabulary;
  raw `COPY` of the same number of dose rows, already built in memory, into the same table in one
  transaction. Rounds alternate A/B/B/A; the ratio is the median of the per-round ratios (target
  0.20).
- **FHIR resources validated per second**: Patient and Immunization resources (made by the
  project's own FHIR mapping from synthetic records) validated with fhir.resources and mapped to
  the registry's input models (target 3,000/s), and the end-to-end rate of importing them from
  NDJSON.

It creates a database `nhr_bench_imports_<hex>` on the server and drops it at the end. No value
of a synthetic patient is printed.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import random
import secrets
import statistics
import tempfile
import time
import uuid
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import psycopg

from bench.population import BENCH_FACILITY, create_database, drop_database, libpq


COMBOS = [("BCG", 1), ("HEPB", 1), ("TCV", 1)] + [("OPV", d) for d in range(5)] + [("PENTA", d) for d in (1, 2, 3)] + \
         [("PCV", d) for d in (1, 2, 3)] + [("ROTA", 1), ("ROTA", 2), ("IPV", 1), ("IPV", 2), ("MR", 1), ("MR", 2)] + \
         [("TD", d) for d in range(1, 6)]
DOSE_COLUMNS = ("id", "version", "patient_id", "custodian", "province", "district", "facility", "vaccine", "dose_number",
                "date_given", "lot_number", "performer_id", "status", "status_reason_ct", "supersedes_id", "recorded_at")


def settings_for(url: str, key_dir: str):
    from registry.settings import Settings

    return Settings(env="test", database_url=url, key_dir=key_dir)


def _setup(url: str, key_dir: str, patients: int, log) -> tuple[object, str, list]:
    from registry import bootstrap
    from registry.bulk import importer, sources
    from registry.runtime import Runtime
    from registry.users.schemas import UserCreate
    from registry.users.service import create_user

    rt = Runtime.build(settings_for(url, key_dir))
    rt.keyring.create_missing = True
    bootstrap.init(rt)
    username = f"bench.import.{secrets.token_hex(3)}"
    with rt.sessions.begin() as s:
        create_user(s, rt, UserCreate(username=username, display_name="Benchmark importer", password=secrets.token_urlsafe(24),
                                      role="clinic_worker", scope_code=BENCH_FACILITY))
    rng = random.Random(7)
    path = Path(key_dir).parent / "patients.csv"
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["id", "given_name", "family_name", "sex", "birth_date", "guardian_name", "guardian_relationship"])
        for _ in range(patients):
            w.writerow([uuid.UUID(int=rng.getrandbits(128), version=4), f"Given{rng.randrange(10**6)}", f"Family{rng.randrange(10**6)}",
                        rng.choice(("female", "male")), (date.today() - timedelta(days=rng.randrange(400, 1000))).isoformat(),
                        f"Guardian{rng.randrange(10**6)}", "mother"])
    t0 = time.perf_counter()
    res = importer.run(rt, path, username=username)
    log(f"  {res.imported} patients imported in {time.perf_counter() - t0:.1f} s (encrypted, blind-indexed, audited)")
    with psycopg.connect(libpq(url)) as c:
        pids = [r[0] for r in c.execute("SELECT id FROM patients ORDER BY id")]
    del sources
    return rt, username, pids


def _dose_plan(pids: list, rounds: int, n: int) -> list[list[tuple]]:
    """Disjoint (patient, vaccine, dose) triples for every round and both arms."""
    triples = [(p, v, d) for v, d in COMBOS for p in pids]
    random.Random(11).shuffle(triples)
    need = 2 * rounds * n
    if len(triples) < need:
        raise SystemExit(f"not enough patients for {need} distinct doses; raise --patients")
    return [triples[i * n:(i + 1) * n] for i in range(2 * rounds)]


# the product-level CVX code a reported dose of each EPI vaccine carries (registry/immunizations/data/vocabulary.json)
PRODUCT = {"BCG": "19", "HEPB": "08", "TCV": "190", "OPV": "02", "PENTA": "146", "PCV": "133", "ROTA": "119", "IPV": "10",
           "MR": "03", "TD": "115"}
ORIGINS = ("home_record", "facility_register", "other_system", "abroad", "recall")
CVX = "http://hl7.org/fhir/sid/cvx"


def _day(dose_number: int) -> str:
    """A series' doses on different days, all after every bench patient's birth (400+ days ago)."""
    return (date.today() - timedelta(days=400 - 35 * dose_number)).isoformat()


def _csv(path: Path, triples: list[tuple]) -> Path:
    """A mixed history: even rows administered here (EPI code, dose number), odd rows reported
    (product code; every third of them with no dose number)."""
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["id", "patient_id", "vaccine", "dose_number", "date_given", "lot_number", "code_system", "code",
                    "provenance", "report_origin"])
        for i, (p, v, d) in enumerate(triples):
            day = _day(d)
            if i % 2 == 0:
                w.writerow([uuid.uuid4(), p, v, d, day, "LOT-1", "", "", "", ""])
            else:
                number = "" if i % 3 == 0 else d
                w.writerow([uuid.uuid4(), p, "", number, day, "", CVX, PRODUCT[v], "reported", ORIGINS[i % len(ORIGINS)]])
    return path


def _copy_rows(url: str, triples: list[tuple]) -> float:
    """Raw COPY of the same rows (built beforehand) into immunizations; returns rows/s."""
    now, day, performer = datetime.now(UTC), date.today() - timedelta(days=10), uuid.uuid4()
    rows = [(uuid.uuid4(), 1, p, "PK-PB", "PK-PB", "PK-PB-LAH", BENCH_FACILITY, v, d, day, "LOT-1", performer,
             "completed", None, None, now) for p, v, d in triples]
    names = ", ".join(DOSE_COLUMNS)
    with psycopg.connect(url) as c:
        t0 = time.perf_counter()
        with c.cursor() as cur, cur.copy(f"COPY immunizations ({names}) FROM STDIN") as cp:
            for r in rows:
                cp.write_row(r)
        c.commit()
        return len(rows) / (time.perf_counter() - t0)


def _import_rows(rt, username: str, path: Path, n: int) -> float:
    from registry.bulk import importer

    t0 = time.perf_counter()
    res = importer.run(rt, path, username=username)
    elapsed = time.perf_counter() - t0
    if res.imported != n:
        from collections import Counter

        report = path.with_suffix(".errors.csv")
        importer.write_error_report(rt, res.run_id, report)
        with open(report, newline="") as f:
            reasons = Counter((r["field"], r["reason"]) for r in csv.DictReader(f))
        raise AssertionError(f"{res.rejected} rows refused: {dict(reasons)}")
    return n / elapsed


def _fhir_resources(rt, pids: list, n: int) -> list[dict]:
    """n/2 Patients and n/2 Immunizations, made by the project's mapping from synthetic views."""
    from registry.bulk import fhir_io
    from registry.immunizations.schemas import DoseView
    from registry.patients.schemas import PatientView

    now, out = datetime.now(UTC), []
    for i in range(n // 2):
        pid = uuid.uuid4()
        out.append(fhir_io.patient_resource(PatientView.model_construct(
            # distinct children (different names and birth dates), so the importer's within-file duplicate
            # check (registry/linkage/within_batch.py) has nothing to hold back
            id=pid, health_id="1234-5678-9012", given_name=f"G{pid.hex[:10]}", family_name=f"F{pid.hex[10:20]}",
            sex="female", birth_date=date(2025, 1, 1) - timedelta(days=i % 1500), bform=None, cnic=None, guardian=None, phone=None, address=None, province="PK-PB",
            district="PK-PB-LAH", home_facility=BENCH_FACILITY, custodian="PK-PB", version=1, created_at=now, updated_at=now)))
        out.append(fhir_io.immunization_resource(DoseView.model_construct(
            id=uuid.uuid4(), patient_id=pid, vaccine="BCG", dose_number=1, date_given=date(2025, 1, 2), lot_number="L1",
            facility=BENCH_FACILITY, performer_id=uuid.uuid4(), status="completed", status_reason=None, supersedes_id=None,
            recorded_at=now, version=1)))
    return out


def _fhir_rates(rt, username: str, pids: list, n: int, workdir: Path, log) -> dict:
    from registry.bulk import fhir_io, importer

    resources = _fhir_resources(rt, pids, n)
    for r in resources:
        r.pop("id", None)
    t0 = time.perf_counter()
    urns: dict = {}
    for i, r in enumerate(resources):
        fhir_io.parse("bench", i, r, urns)
    validated = len(resources) / (time.perf_counter() - t0)
    validated_2 = _parallel_check(resources, 2)
    rates = {}
    for workers in (1, 2):
        path = workdir / f"fhir-{workers}.ndjson"
        with open(path, "w") as f:
            for i in range(0, len(resources), 2):
                pid = uuid.uuid4()
                name = [{**resources[i]["name"][0], "family": f"F{pid.hex[:10]}", "given": [f"G{pid.hex[10:20]}"]}]
                f.write(json.dumps({**resources[i], "id": str(pid), "name": name}) + "\n")  # new children per file
                f.write(json.dumps({**resources[i + 1], "patient": {"reference": f"Patient/{pid}"}}) + "\n")
        t0 = time.perf_counter()
        res = importer.run(rt, path, username=username, workers=workers)
        rates[workers] = (res.imported / (time.perf_counter() - t0), res)
    log(f"  FHIR: {validated:,.0f} resources/s validated and mapped (1 process), {validated_2:,.0f}/s validated in 2 processes; "
        f"NDJSON imported end to end: {rates[1][0]:,.0f}/s (1 process), {rates[2][0]:,.0f}/s (--workers 2)")
    return {"validated_per_s": validated, "validated_per_s_2_processes": validated_2,
            "ndjson_import_per_s": rates[1][0], "ndjson_import_per_s_2_workers": rates[2][0],
            "imported": rates[1][1].imported, "rejected": rates[1][1].rejected,
            "imported_2_workers": rates[2][1].imported, "rejected_2_workers": rates[2][1].rejected, "target_validated_per_s": 3000}


def _parallel_check(resources: list[dict], workers: int) -> float:
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    from registry.bulk import fhir_io

    lines = [json.dumps(r) for r in resources]
    with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn")) as pool:
        list(pool.map(fhir_io.check, lines[:workers * 4]))  # start the workers and import fhir.resources
        t0 = time.perf_counter()
        errors = [e for e in pool.map(fhir_io.check, lines, chunksize=max(1, len(lines) // (workers * 8))) if e]
        rate = len(lines) / (time.perf_counter() - t0)
    assert not errors, "synthetic resources must validate"
    return rate


def run(server_url: str, doses: int = 100_000, rounds: int = 3, fhir: int = 6000, json_path: str | None = None,
        log=print) -> dict:
    name = f"nhr_bench_imports_{secrets.token_hex(3)}"
    url = create_database(server_url, name)
    work = Path(tempfile.mkdtemp(prefix="nhr-bench-imports-"))
    try:
        patients = max(200, (2 * rounds * doses) // (len(COMBOS) - 2) + 1)
        log(f"setting up {name}: {patients} patients ...")
        rt, username, pids = _setup(url, str(work / "keyring"), patients, log)
        plan = _dose_plan(pids, rounds, doses)
        per_round = []
        for k in range(rounds):
            file = _csv(work / f"doses-{k}.csv", plan[2 * k])
            arms = [("copy", lambda: _copy_rows(libpq(url), plan[2 * k + 1])), ("import", lambda: _import_rows(rt, username, file, doses))]
            if k % 2:
                arms.reverse()
            got = {name_: fn() for name_, fn in arms}
            got["ratio"] = got["import"] / got["copy"]
            per_round.append(got)
            log(f"  round {k + 1}: import {got['import']:,.0f} doses/s, COPY {got['copy']:,.0f} rows/s, ratio {got['ratio']:.3f}")
        doc = {
            "started": datetime.now(UTC).isoformat(), "doses_per_round": doses, "rounds": per_round,
            "import_doses_per_s": statistics.median(r["import"] for r in per_round),
            "copy_rows_per_s": statistics.median(r["copy"] for r in per_round),
            "ratio_to_copy": statistics.median(r["ratio"] for r in per_round), "target_ratio": 0.20,
            "fhir": _fhir_rates(rt, username, pids, fhir, work, log) if fhir else None,
        }
        log(f"native dose import: {doc['import_doses_per_s']:,.0f} doses/s = {doc['ratio_to_copy']:.2f} x raw COPY "
            f"({doc['copy_rows_per_s']:,.0f} rows/s); target 0.20")
        rt.engine.dispose()
        if json_path:
            Path(json_path).write_text(json.dumps(doc, indent=1))
        return doc
    finally:
        drop_database(server_url, name)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m bench.imports", description=__doc__.split("\n\n")[0])
    ap.add_argument("--server-url", default=os.environ.get("NHR_BENCH_SERVER_URL", "postgresql://postgres@127.0.0.1:5432/postgres"))
    ap.add_argument("--doses", type=int, default=100_000, help="dose rows per round and arm")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--fhir", type=int, default=6000, help="FHIR resources to validate (0: skip)")
    ap.add_argument("--json", dest="json_path")
    a = ap.parse_args(argv)
    run(a.server_url, a.doses, a.rounds, a.fhir, a.json_path)


if __name__ == "__main__":
    main()
