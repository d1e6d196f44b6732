"""`python -m bench.campaign`: the evening burst of a polio campaign day (issue 17).

N simulated devices (vaccinators' phones, default 200), each with its own clinic-worker account
at a facility of the loaded population, upload a day of work at the same moment through the real
batch sync API (`POST /api/v1/sync/batch`, docs/offline-sync.md):

- a few children **found by identifier** first (`POST /api/v1/patients/search` by B-form: the
  children the device did not have offline), the answer checked against the expected child;
- one campaign dose for each of its children (OPV, given today, with an `override_reason`: the
  registry has no campaign (SIA) dose kind, so a campaign dose is recorded as an extra OPV dose,
  the way `bench/uploads.py` records its doses; every one goes through the full schedule
  judgement);
- a few **registrations** (newborns, `patient.create` with a client UUID, followed in the same
  batch by their birth doses BCG and OPV 0);
- a few **refusals** (`dose.record` with `status: not-done` and a `refusal-*` reason).

Every batch carries an `Idempotency-Key`. A share of the devices (`--drop-rate`) lose their
connection: the request is written in full and the socket closed before the response is read;
the device then resends the same body with the same key (answers 409 "still running" are waited
out and sent again). Any 5xx, any transport error other than the deliberate drops, any rejected
item, any lookup that does not find its child, and any dose lost or stored twice is an error;
after each burst the database is checked: every dose and every registration exactly once.

Per worker count (`--workers 1,2,4`: uvicorn workers of `nhr serve`, on PostgreSQL) one round
measures, in alternating order, the trivial endpoint (the HTTP floor, `bench/baselines.py`,
same worker count, wrk or the built-in generator), the burst, and raw `COPY` of dose rows (the
database floor). Reported: doses/s and records/s of the burst, p50/p99 of a batch (from the
first send to the acknowledgement, resends included), the burst's wall time, the worker CPU per
dose, and the ratios to COPY (doses/s over COPY rows/s; the burst time over the time COPY needs
for the same rows) and to the trivial endpoint (batches/s and lookups/s over trivial requests/s).
Ratios are only meaningful within one worker count's round; absolute rates swing with whatever
else runs on the machine. Nothing here prints a name, an identifier or a response body.

Modules: `campaign_devices` (options, accounts, who vaccinates whom), `campaign_burst` (the
uploads and the database check), `pyspy` (the optional profile); this one runs the rounds.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import shutil
import sys
import tempfile
import time
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path

from bench import baselines, loadgen, servers
from bench.campaign_burst import JSON_CT, burst, verify
from bench.campaign_devices import DEFAULT_SERVER, Device, Options, login_all, plan
from bench.loadgen import RequestSpec
from bench.population import create_database, drop_database, prepare
from bench.pyspy import Profile

RESULTS = Path(__file__).resolve().parent / "results"


def trivial_floor(base: str, seconds: float, generator: str) -> dict:
    return loadgen.run(generator, base, RequestSpec("GET", "/"), duration=seconds, concurrency=32, nonce=0)


# --- the run ---------------------------------------------------------------------------------

def run(opts: Options) -> dict:
    log = (lambda *a: None) if opts.quiet else (lambda *a: print(*a, flush=True))
    generator, _ = loadgen.choose()
    if generator == "python":
        log(loadgen.WRK_MISSING)
    started = datetime.now(UTC)
    db = f"nhr_bench_campaign_{started:%Y%m%d_%H%M%S}_{time.time_ns() % 1000:03d}"
    url = create_database(opts.server_url, db)
    key_dir = tempfile.mkdtemp(prefix="nhr-bench-keys-")
    rounds: list[dict] = []
    t_run = time.perf_counter()
    try:
        scale = opts.resolved_scale()
        pop = prepare(url, key_dir, scale, log=log)
        log(f"population ready: {pop.patients} patients, {pop.doses} doses")
        devices = plan(url, key_dir, opts)
        short = sum(1 for d in devices if len(d.children) < opts.doses)
        if short:
            log(f"{short} devices have fewer than {opts.doses} children in their catchment (raise --scale)")
        for k, w in enumerate(opts.workers):
            rounds.append(_round(opts, url, key_dir, devices, w, k, generator, log))
    finally:
        if not opts.keep:
            drop_database(opts.server_url, db)
            shutil.rmtree(key_dir, ignore_errors=True)
    base1 = rounds[0]["burst"]["doses_per_s"] if rounds else 0.0
    for r in rounds:
        r["scaling_vs_first"] = r["burst"]["doses_per_s"] / base1 if base1 else None
    doc = {"meta": {"started": started.isoformat(timespec="seconds"), "options": {**asdict(opts), "workers": list(opts.workers)},
                    "scale": opts.resolved_scale(), "generator": generator, "cpus": os.cpu_count(),
                    "load_average_start": _loadavg(), "run_seconds": round(time.perf_counter() - t_run, 1)},
           "rounds": rounds}
    if opts.keep:
        doc["meta"]["kept"] = {"database_url": url, "key_dir": key_dir}
    path = Path(opts.json_path) if opts.json_path else RESULTS / f"campaign-{started:%Y%m%dT%H%M%SZ}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(doc, indent=1, default=str))
    doc["meta"]["json_path"] = str(path)
    if not opts.quiet:
        print(markdown(doc))
        log(f"JSON written to {path}")
    return doc


def _loadavg() -> list[float]:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return []


def _round(opts: Options, url: str, key_dir: str, devices: list[Device], workers: int, k: int, generator: str, log) -> dict:
    reg = servers.start_registry(url, key_dir, workers)
    triv = servers.start_trivial(workers)
    try:
        reg.wait_ready(120)
        triv.wait_ready(120)
        if not devices[0].token:
            log(f"logging in {len(devices)} devices ...")
            login_all(reg.base, devices)
        _warm(reg.base, devices[0], triv.base, generator)
        load_before = _loadavg()
        out: dict = {"workers": workers, "load_average": load_before}
        order = ("trivial", "burst", "copy") if k % 2 == 0 else ("copy", "burst", "trivial")
        for step in order:
            if step == "trivial":
                out["trivial"] = trivial_floor(triv.base, opts.floor_seconds, generator)
            elif step == "copy":
                out["copy"] = baselines.copy_floor(url, opts.floor_seconds)
            else:
                cpu0 = reg.cpu_seconds()
                prof = Profile(reg.worker_pids(), RESULTS, f"w{workers}") if opts.profile and k == 0 else None
                b, upload = burst(reg.base, devices, opts, nonce=k + 1)
                if prof:
                    out["profile"] = prof.stop()
                b["cpu_ms_per_dose"] = (reg.cpu_seconds() - cpu0) * 1000 / max(1, len(upload.doses))
                since = b.pop("_started_at")
                b["check"] = verify(url, upload, since)
                out["burst"] = b
            log(f"workers {workers}: {step} done")
        out["peak_rss_mb"] = reg.peak_rss_mb()
        b, copy, trivial = out["burst"], out["copy"], out["trivial"]
        chk = b["check"]
        b["errors"] = (b["status_5xx"] + b["transport_errors"] + b["other_status"] + b["lookup_misses"] + b["rejected"]
                       + chk["doses_missing"] + chk["doses_extra"] + chk["doses_wrong_status"] + chk["patients_missing"]
                       + (b["devices"] - b["batches_acked"]))
        out["ratios"] = {
            "doses_per_s_x_copy_rows_per_s": b["doses_per_s"] / copy["rate"] if copy["rate"] else None,
            "burst_seconds_x_copy_seconds": (b["seconds"] / (b["doses_sent"] / copy["rate"])
                                             if copy["rate"] and b["doses_sent"] else None),
            "batches_per_s_x_trivial": b["batches_per_s"] / trivial["rate"] if trivial["rate"] else None,
            "lookups_per_s_x_trivial": (b["lookups"] / b["seconds"]) / trivial["rate"] if trivial["rate"] and b["seconds"] else None,
        }
        log(f"workers {workers}: {b['doses_per_s']:.0f} doses/s, burst {b['seconds']:.1f}s, errors {b['errors']}")
        return out
    finally:
        reg.stop()
        triv.stop()


def _warm(base: str, d: Device, trivial_base: str, generator: str) -> None:
    """A second of the trivial endpoint and a few lookups: pools, key caches, imports."""
    trivial_floor(trivial_base, 1.0, generator)
    host, port = base.split("://", 1)[1].split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=60)
    for bform, _ in d.lookups[:3] or [("00000-0000000-0", "")]:
        conn.request("POST", "/api/v1/patients/search", json.dumps({"system": "bform", "value": bform}),
                     {"Authorization": f"Bearer {d.token}", **JSON_CT})
        conn.getresponse().read()
    conn.close()


# --- output ----------------------------------------------------------------------------------

def markdown(doc: dict) -> str:
    o = doc["meta"]["options"]
    lines = [f"campaign burst: {o['devices']} devices x ({o['doses']} campaign doses + {o['registrations']} newborns with "
             f"2 doses + {o['refusals']} refusals; {o['lookups']} lookups by identifier), {o['drop_rate']:.0%} of "
             f"first uploads dropped and resent; {doc['meta']['scale']:,} patients; generator {doc['meta']['generator']}",
             "",
             "| workers | burst s | doses/s | records/s | batch p50 ms | batch p99 ms | lookup p50 ms | errors | "
             "CPU ms/dose | COPY rows/s | x COPY | burst / COPY time | trivial req/s | batches/s x trivial | "
             "scaling vs first |",
             "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in doc["rounds"]:
        b, x = r["burst"], r["ratios"]
        lines.append(
            f"| {r['workers']} | {b['seconds']:.1f} | {b['doses_per_s']:,.0f} | {b['records_per_s']:,.0f} | "
            f"{b['batch_p50_ms']:,.0f} | {b['batch_p99_ms']:,.0f} | {b['lookup_p50_ms']:,.0f} | {b['errors']} | "
            f"{b['cpu_ms_per_dose']:.2f} | {r['copy']['rate']:,.0f} | {_r(x['doses_per_s_x_copy_rows_per_s'])} | "
            f"{_r(x['burst_seconds_x_copy_seconds'], '{:.0f}')} | {r['trivial']['rate']:,.0f} | "
            f"{_r(x['batches_per_s_x_trivial'], '{:.4f}')} | {_r(r.get('scaling_vs_first'), '{:.2f}')} |")
    for r in doc["rounds"]:
        b = r["burst"]
        lines.append(f"\nworkers {r['workers']}: sends {b['sends']} (dropped on purpose {b['dropped']}, 409 while "
                     f"running {b['retried_409']}, replayed {b['replayed']}), 5xx {b['status_5xx']}, transport errors "
                     f"{b['transport_errors']}, rejected items {b['rejected']} {b['rejected_reasons'] or ''}, lookup misses "
                     f"{b['lookup_misses']}; database check {b['check']}; peak RSS MiB {r['peak_rss_mb']}")
        if r.get("profile"):
            p = r["profile"]
            lines.append(f"profile ({p.get('samples', 0)} GIL samples){': ' + p['note'] if p.get('note') else ''}: "
                         + ", ".join(f"{k} {v:.0%}" for k, v in p.get("shares", {}).items()))
    return "\n".join(lines)


def _r(x, fmt: str = "{:.3f}") -> str:
    return "-" if x is None else fmt.format(x)


def main(argv: list[str] | None = None) -> int:
    d = Options()
    p = argparse.ArgumentParser(prog="python -m bench.campaign", description=(
        "A campaign day's evening burst: devices upload their day through the batch sync API at once; doses/s, "
        "p50/p99 per batch, errors (checked in the database), burst time, as ratios to raw COPY and to the trivial "
        "endpoint, per uvicorn worker count. Needs PostgreSQL. See bench/README.md."))
    p.add_argument("--quick", action="store_true", help="a tiny campaign (4 devices x 5 doses, 400 patients, 1 worker): "
                                                        "checks the machinery, measures nothing")
    p.add_argument("--devices", type=int, help=f"devices uploading in the burst (default {d.devices}; quick 4)")
    p.add_argument("--doses", type=int, help=f"campaign doses per device, one per child (default {d.doses}; quick 5)")
    p.add_argument("--registrations", type=int, help=f"newborns registered per device, each with BCG and OPV 0 "
                                                     f"(default {d.registrations}; quick 1)")
    p.add_argument("--refusals", type=int, help=f"refusals (not-done doses) per device (default {d.refusals}; quick 1)")
    p.add_argument("--lookups", type=int, help=f"children per device found by B-form before uploading "
                                               f"(default {d.lookups}; quick 2)")
    p.add_argument("--drop-rate", type=float, help=f"share of devices whose first upload loses its connection and is "
                                                   f"resent with the same Idempotency-Key (default {d.drop_rate}; quick 0.5)")
    p.add_argument("--workers", default=None, help="uvicorn worker counts to measure, comma-separated (default 1,2,4; quick 1)")
    p.add_argument("--concurrency", type=int, default=0, help="devices uploading at once (default 0: all of them)")
    p.add_argument("--scale", type=int, help="patients to load (default: enough for the devices' children, at least "
                                             "20,000; quick 400)")
    p.add_argument("--floor-seconds", type=float, help=f"seconds of the trivial endpoint and of COPY per worker count "
                                                       f"(default {d.floor_seconds}; quick 1)")
    p.add_argument("--server-url", default=DEFAULT_SERVER, help=f"PostgreSQL server to create the database on "
                                                               f"(default {DEFAULT_SERVER})")
    p.add_argument("--keep", action="store_true", help="keep the database and the key directory (default: dropped)")
    p.add_argument("--profile", action="store_true", help="py-spy the registry workers (GIL samples) during the first "
                                                          "burst (default off; needs py-spy and ptrace permission)")
    p.add_argument("--json", dest="json_path", help="results file (default bench/results/campaign-<timestamp>.json)")
    p.add_argument("--seed", type=int, default=d.seed, help=f"random seed (default {d.seed})")
    a = p.parse_args(argv)
    given = {k: v for k, v in {
        "devices": a.devices, "doses": a.doses, "registrations": a.registrations, "refusals": a.refusals,
        "lookups": a.lookups, "drop_rate": a.drop_rate, "scale": a.scale, "floor_seconds": a.floor_seconds,
        "workers": tuple(int(x) for x in a.workers.split(",")) if a.workers else None}.items() if v is not None}
    if a.drop_rate is not None and not 0 <= a.drop_rate <= 1:
        p.error("--drop-rate must be between 0 and 1")
    if a.devices is not None and a.devices < 1:
        p.error("--devices must be at least 1")
    common = dict(concurrency=a.concurrency, server_url=a.server_url, keep=a.keep, profile=a.profile,
                  json_path=a.json_path, seed=a.seed)
    opts = Options.quick(**given, **common) if a.quick else Options(**given, **common)
    doc = run(opts)
    return 0 if all(r["burst"]["errors"] == 0 for r in doc["rounds"]) else 1


if __name__ == "__main__":
    sys.exit(main())
