"""`python -m bench.batch_paths --base DIR`: the batch sync upload of doses (`batch_sync`,
bench/uploads.py: 50 `dose.record` items with an Idempotency-Key; `batch_mixed`: a campaign
device's day, `mixed_body`), this checkout against another
(DIR: e.g. `git archive main | tar -x -C DIR`), on one database, interleaved (issue 17).

Both registries serve the same population with the same keys; each round measures raw `COPY`
of dose-shaped rows (bench/baselines.copy_floor), then `batch_sync` on each tree in `--slices`
short alternating slices (A/B, then B/A, ...): every upload adds doses to the children's
histories, which the judgement reads, so the trees must see the same histories (measured: one
tree's CPU per batch grew from 41 to 127 ms over four 4-second arms of 2,000 children). Reported per tree: the median over rounds of doses/s as a ratio to
the round's COPY rows/s, and the workers' CPU per stored dose. Results as JSON on stdout's last
line and in bench/results/. The servers run without their in-process sealer and refresher
(`NHR_IN_PROCESS_WORKER=false`, as in production): on one shared database, either tree's workers
would otherwise do the background work of both uploads' rows, and the CPU per dose would mix.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import statistics
import tempfile
import uuid
from datetime import UTC, date, datetime
from pathlib import Path

from bench import servers, uploads
from bench.baselines import copy_floor
from bench.population import create_database, drop_database, prepare
from bench.runner import DEFAULT_SERVER, RESULTS, _tokens

MIXED_NEWBORNS, MIXED_DOSES, MIXED_REFUSALS = 5, 30, 5  # 5 x 3 + 30 + 5 = 50 items, as `batch_sync`
_GIVEN = ("Ayesha", "Fatima", "Zainab", "Maryam", "Hira", "Ali", "Hamza", "Bilal", "Usman", "Ahmed")
_FAMILY = ("Qureshi", "Baloch", "Chaudhry", "Siddiqui", "Afridi", "Memon", "Bhatti", "Khattak", "Soomro", "Lashari")


def mixed_body(pop, rng: random.Random) -> tuple[bytes, int]:
    """A campaign device's upload (bench/campaign_burst.batch_for's shape): newborns registered
    with a client id, each followed by its BCG and OPV 0 by that id; campaign OPV 1 doses for
    children of the facility; refusals (not-done). Every item is meant to be `created`; names
    carry a random tag, so no newborn is a likely duplicate of another."""
    today = date.today().isoformat()
    items: list[dict] = []
    for _ in range(MIXED_NEWBORNS):
        pid, tag = str(uuid.uuid4()), f"{rng.randrange(16 ** 6):06x}"
        family = f"{rng.choice(_FAMILY)} {tag}"
        items.append({"op": "patient.create", "data": {
            "id": pid, "given_name": rng.choice(_GIVEN), "family_name": family, "sex": rng.choice(("female", "male")),
            "birth_date": today, "guardian": {"name": f"{rng.choice(_GIVEN[:5])} {tag}", "relationship": "mother"},
            "phone": f"0300-{rng.randrange(10 ** 7):07d}", "address": f"House {rng.randrange(1, 400)}, campaign area"}})
        for vaccine, number in (("BCG", 1), ("OPV", 0)):
            items.append({"op": "dose.record", "patient_id": pid, "data": {
                "id": str(uuid.uuid4()), "vaccine": vaccine, "dose_number": number, "date_given": today,
                "lot_number": "CAMP-2026-1"}})
    children = rng.sample(pop.read_ids, min(MIXED_DOSES + MIXED_REFUSALS, len(pop.read_ids)))
    for k, pid in enumerate(children):
        data = {"id": str(uuid.uuid4()), "vaccine": "OPV", "dose_number": 1, "date_given": today, "lot_number": "CAMP-2026-1"}
        data.update({"override_reason": uploads.REASON} if k < MIXED_DOSES else
                    {"status": "not-done", "not_done_reason": "refusal-child-sick"})
        items.append({"op": "dose.record", "patient_id": pid, "data": data})
    return json.dumps({"items": items}).encode(), len(items)


BUNDLE_NEWBORNS = 5  # fhir_bundle_patients: 5 x 3 entries + 5 campaign doses = 20 entries, as `fhir_bundle`
_ROLE_CODE = "http://terminology.hl7.org/CodeSystem/v3-RoleCode"


def patients_bundle_body(pop, rng: random.Random, *, children: list[str] | None = None) -> tuple[bytes, int]:
    """`mixed_body` as a FHIR transaction Bundle: newborn Patients, each with its BCG and OPV 0
    referencing it by its `urn:uuid:` fullUrl, then campaign OPV 1 doses for children of the
    facility (`children`, drawn by bench/uploads.py). Given and family names carry a random tag of
letters: no likely duplicate (one would refuse the whole transaction; measured: with the tag in
the family name only, about one Bundle in six was a 409 on both paths)."""
    today = date.today().isoformat()
    entries: list[dict] = []

    def dose(ref: str, vaccine: str, number: int, override: bool) -> dict:
        res = {"resourceType": "Immunization", "status": "completed",
               "vaccineCode": {"coding": [{"system": uploads.EPI, "code": vaccine}]}, "patient": {"reference": ref},
               "occurrenceDateTime": today, "lotNumber": "CAMP-2026-1",
               "protocolApplied": [{"doseNumberPositiveInt": number} if number else {"doseNumberString": "0"}]}
        if override:
            res["extension"] = [{"url": uploads.OVERRIDE_EXT, "valueString": uploads.REASON}]
        return {"fullUrl": f"urn:uuid:{uuid.uuid4()}", "request": {"method": "POST", "url": "Immunization"}, "resource": res}

    for _ in range(BUNDLE_NEWBORNS):
        urn, tag = f"urn:uuid:{uuid.uuid4()}", "".join(chr(97 + rng.randrange(26)) for _ in range(6))
        entries.append({"fullUrl": urn, "request": {"method": "POST", "url": "Patient"}, "resource": {
            "resourceType": "Patient", "name": [{"use": "official", "family": f"{rng.choice(_FAMILY)} {tag}",
                                                 "given": [f"{rng.choice(_GIVEN)}{tag}"]}],
            "gender": rng.choice(("female", "male")), "birthDate": today,
            "telecom": [{"system": "phone", "value": f"0300-{rng.randrange(10 ** 7):07d}", "use": "mobile"}],
            "address": [{"line": [f"House {rng.randrange(1, 400)}, campaign area"]}],
            "contact": [{"relationship": [{"coding": [{"system": _ROLE_CODE, "code": "MTH"}]}],
                         "name": {"text": f"{rng.choice(_GIVEN[:5])} {tag}"}}]}})
        entries += [dose(urn, "BCG", 1, False), dose(urn, "OPV", 0, False)]
    for pid in (children or rng.sample(pop.read_ids, 5))[:uploads.BUNDLE_ENTRIES - 3 * BUNDLE_NEWBORNS]:
        entries.append(dose(f"Patient/{pid}", "OPV", 1, True))
    return json.dumps({"resourceType": "Bundle", "type": "transaction", "entry": entries}).encode(), len(entries)


def _register_mixed() -> None:
    """`batch_mixed` as one of bench/uploads.py's workloads (its records: the batch's `created`)."""
    path, ctype, _, _, keyed = uploads.KINDS["batch_sync"]
    uploads.KINDS.setdefault("batch_mixed", (path, ctype, mixed_body, "items", keyed))
    path, ctype, _, unit, keyed = uploads.KINDS["fhir_bundle"]
    uploads.KINDS.setdefault("fhir_bundle_patients", (path, ctype, patients_bundle_body, unit, keyed))
    accepted = uploads._accepted
    if getattr(accepted, "mixed", False):
        return

    def counted(name: str, status: int, payload: bytes, sent: int) -> int:
        return accepted("batch_sync" if name == "batch_mixed" else name, status, payload, sent)
    counted.mixed = True
    uploads._accepted = counted


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.batch_paths")
    p.add_argument("--base", help="the other checkout (served as 'base')")
    p.add_argument("--off", metavar="ENV", help="instead of --base: this checkout served as 'base' too, with ENV=false "
                                                "(a switch's A/B, e.g. NHR_FHIR_BUNDLE_ON_LOOP)")
    p.add_argument("--workload", default="batch_sync", choices=("batch_sync", "batch_mixed", "fhir_bundle", "fhir_bundle_patients"),
                   help="bench/uploads.py's workload (fhir_bundle: transaction Bundles of 20 Immunizations; "
                        "fhir_bundle_patients: transaction Bundles of 5 newborn Patients with their BCG and OPV 0 "
                        "by urn:uuid and 5 campaign doses, 20 entries: `patients_bundle_body`; "
                        "batch_mixed: a campaign device's day, newborns registered with their birth doses, "
                        "campaign doses and refusals, 50 items: `mixed_body`)")
    p.add_argument("--scale", type=int, default=20_000)
    p.add_argument("--runs", type=int, default=4)
    p.add_argument("--duration", type=float, default=6.0)
    p.add_argument("--threads", type=int, default=4, help="concurrent uploads (bench/uploads.py's default)")
    p.add_argument("--slices", type=int, default=6, help="alternations of the trees within a round")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--floor-seconds", type=float, default=3.0)
    p.add_argument("--server-url", default=DEFAULT_SERVER)
    p.add_argument("--profile", action="store_true",
                   help="after the rounds, one more slice per tree under py-spy (GIL samples, bench/pyspy.py)")
    p.add_argument("--in-process-worker", action="store_true",
                   help="let the API workers run the audit sealer and coverage refresher (default off: both trees share "
                        "one database, so one tree's workers would do the other's background work and its CPU)")
    a = p.parse_args(argv)
    if (a.base is None) == (a.off is None):
        p.error("give --base DIR or --off ENV")
    _register_mixed()
    os.environ["NHR_IN_PROCESS_WORKER"] = "true" if a.in_process_worker else "false"
    started = datetime.now(UTC)
    db = f"nhr_bench_bp_{started:%Y%m%d_%H%M%S}"
    url = create_database(a.server_url, db)
    key_dir = tempfile.mkdtemp(prefix="nhr-bench-keys-")
    running = []
    try:
        pop = prepare(url, key_dir, a.scale, log=lambda *x: print(*x, flush=True))
        new = servers.start_registry(url, key_dir, a.workers, name="new")
        if a.off:
            os.environ[a.off] = "false"
            try:
                base = servers.start_registry(url, key_dir, a.workers, name="base")
            finally:
                os.environ.pop(a.off)
        else:
            base = servers.start_registry(url, key_dir, a.workers, tree=Path(a.base).resolve(), name="base")
        running = [new, base]
        for s in running:
            s.wait_ready(120)
        arms = [("base", base), ("new", new)]
        token = _tokens(new, pop)["clinic"]
        for _, server in arms:  # warm-up
            uploads.measure(a.workload, server.base, pop, token, duration=1.0, threads=a.threads)
        rounds = []
        for k in range(a.runs):
            token = _tokens(new, pop)["clinic"]
            got = {"load": os.getloadavg()[0], "copy": copy_floor(url, a.floor_seconds)}
            acc = {tree: {"cpu": 0.0, "stored": 0.0, "seconds": 0.0, "p50": [], "non2xx": 0, "errors": 0} for tree, _ in arms}
            for j in range(a.slices):  # short alternating slices: both trees see the same children's histories
                for tree, server in (arms if (k + j) % 2 == 0 else list(reversed(arms))):
                    before = server.cpu_seconds()
                    r = uploads.measure(a.workload, server.base, pop, token, duration=a.duration / a.slices,
                                        threads=a.threads, seed=k * 1000 + j)
                    t = acc[tree]
                    t["cpu"] += server.cpu_seconds() - before
                    t["stored"] += r["rate"] * r["seconds"]
                    t["seconds"] += r["seconds"]
                    t["p50"].append(r["p50_ms"])
                    t["non2xx"] += r["non2xx"]
                    t["errors"] += r["errors"]
            for tree, t in acc.items():
                r = got[tree] = {"rate": t["stored"] / t["seconds"], "p50_ms": statistics.median(t["p50"]),
                                 "non2xx": t["non2xx"], "errors": t["errors"],
                                 "cpu_us_per_dose": t["cpu"] / t["stored"] * 1e6 if t["stored"] else None}
                print(f"round {k + 1} {tree}: {r['rate']:.0f} doses/s p50 {r['p50_ms']:.0f} ms non-2xx {r['non2xx']} "
                      f"errors {r['errors']} cpu {r['cpu_us_per_dose'] or 0:.0f} us/dose; copy {got['copy']['rate']:.0f} rows/s",
                      flush=True)
            rounds.append(got)
        profiles = {}
        if a.profile:
            from bench.pyspy import Profile

            for tree, server in arms:
                prof = Profile(server.worker_pids(), RESULTS, f"batch-paths-{tree}")
                uploads.measure(a.workload, server.base, pop, token, duration=a.duration, threads=a.threads, seed=99)
                profiles[tree] = prof.stop()
                print(f"profile {tree}: {json.dumps({k: v for k, v in profiles[tree].items() if k != 'files'})}", flush=True)
        summary = {}
        for tree, _ in arms:
            summary[tree] = {"x_copy": statistics.median(r[tree]["rate"] / r["copy"]["rate"] for r in rounds),
                             "rate": statistics.median(r[tree]["rate"] for r in rounds),
                             "cpu_us_per_dose": statistics.median(r[tree]["cpu_us_per_dose"] for r in rounds),
                             "p50_ms": statistics.median(r[tree]["p50_ms"] for r in rounds),
                             "non2xx": sum(r[tree]["non2xx"] for r in rounds)}
        summary["new_over_base"] = {"rate": statistics.median(r["new"]["rate"] / r["base"]["rate"] for r in rounds),
                                    "cpu": statistics.median(r["base"]["cpu_us_per_dose"] / r["new"]["cpu_us_per_dose"]
                                                             for r in rounds)}
        summary["copy_rate"] = statistics.median(r["copy"]["rate"] for r in rounds)
        summary["load"] = [round(r["load"], 1) for r in rounds]
        doc = {"started": started.isoformat(timespec="seconds"), "workload": a.workload, "off": a.off, "scale": a.scale, "workers": a.workers,
               "threads": a.threads, "summary": summary, "rounds": rounds, "profiles": profiles}
        RESULTS.mkdir(parents=True, exist_ok=True)
        (RESULTS / f"batch-paths-{started:%Y%m%dT%H%M%SZ}.json").write_text(json.dumps(doc, indent=1, default=str))
        print(json.dumps(summary, default=str))
    finally:
        for s in running:
            s.stop()
        drop_database(a.server_url, db)
        shutil.rmtree(key_dir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
