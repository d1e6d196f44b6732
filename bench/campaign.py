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
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import random
import secrets
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter, defaultdict
from dataclasses import asdict, dataclass, field
from datetime import UTC, date, datetime
from pathlib import Path

import psycopg

from bench import baselines, loadgen, servers
from bench.loadgen import RequestSpec
from bench.population import create_database, drop_database, libpq, prepare, settings_for

DEFAULT_SERVER = "postgresql://postgres@127.0.0.1:5432/postgres"
RESULTS = Path(__file__).resolve().parent / "results"
CAMPAIGN_REASON = "polio campaign (SIA) dose"
REFUSALS = ("refusal-safety", "refusal-religious", "refusal-too-many", "refusal-child-sick")
JSON_CT = {"Content-Type": "application/json"}


@dataclass
class Options:
    devices: int = 200
    doses: int = 50            # campaign doses per device (one per child of its catchment)
    registrations: int = 2     # newborns registered per device, each with BCG and OPV 0
    refusals: int = 3          # refusals per device (dose.record, status not-done)
    lookups: int = 5           # children per device found by identifier (search by B-form) before the upload
    drop_rate: float = 0.1     # share of devices whose first upload loses its connection
    workers: tuple[int, ...] = (1, 2, 4)
    concurrency: int = 0       # devices uploading at once; 0: all of them (the burst)
    scale: int = 0             # patients loaded; 0: enough for the devices' children (at least 20,000)
    floor_seconds: float = 5.0  # seconds of the trivial endpoint and of COPY per round
    server_url: str = DEFAULT_SERVER
    keep: bool = False
    profile: bool = False      # py-spy (GIL samples) of the registry workers during the first burst
    json_path: str | None = None
    seed: int = 2026
    quiet: bool = False

    @classmethod
    def quick(cls, **kw) -> Options:
        """A tiny campaign for the smoke test: every part runs, nothing is meant to be timed."""
        base = dict(devices=4, doses=5, registrations=1, refusals=1, lookups=2, drop_rate=0.5, workers=(1,),
                    scale=400, floor_seconds=1.0)
        return cls(**{**base, **kw})

    def resolved_scale(self) -> int:
        return self.scale or max(20_000, 2 * self.devices * (self.doses + self.refusals))


# --- the plan: who uploads what ----------------------------------------------------------------

@dataclass
class Device:
    index: int
    facility: str
    username: str
    password: str = field(repr=False)
    children: list[str] = field(default_factory=list, repr=False)        # campaign doses (existing children)
    refused: list[str] = field(default_factory=list, repr=False)         # refusals (existing children)
    lookups: list[tuple[str, str]] = field(default_factory=list, repr=False)  # (B-form, expected id)
    drops: bool = False
    token: str = field(default="", repr=False)


def plan(url: str, key_dir: str, opts: Options) -> list[Device]:
    """Accounts and children: devices are spread over the facilities round robin; each facility's
    children are shared among its devices, so no child gets two campaign doses in one burst.
    The accounts are created with cheap argon2 parameters (the registry rehashes them with its
    own at the first login; logins are not what this measures)."""
    from registry.patients import codec
    from registry.runtime import Runtime
    from registry.settings import Settings
    from registry.users.schemas import UserCreate
    from registry.users.service import create_user

    rng = random.Random(opts.seed)
    with psycopg.connect(url) as c:
        rows = c.execute("SELECT id, home_facility, custodian, bform_ct FROM patients ORDER BY id").fetchall()
    by_facility: dict[str, list] = defaultdict(list)
    for r in rows:
        by_facility[r[1]].append(r)
    facilities = sorted(by_facility, key=lambda f: (-len(by_facility[f]), f))
    step = max(1, round(1 / opts.drop_rate)) if opts.drop_rate > 0 else 0
    devices = [Device(i, facilities[i % len(facilities)], f"campaign.d{i:04d}.{secrets.token_hex(3)}",
                      secrets.token_urlsafe(24), drops=bool(step) and i % step == 0) for i in range(opts.devices)]
    settings = Settings(**{**settings_for(url, key_dir).model_dump(),
                           "passwords": {"argon2_memory_kib": 1024, "argon2_time_cost": 1}})
    rt = Runtime.build(settings)
    rt.load_keys()
    per_device = opts.doses + opts.refusals
    for fac in facilities:
        mine = [d for d in devices if d.facility == fac]
        if not mine:
            continue
        kids = by_facility[fac][:]
        rng.shuffle(kids)
        for k, d in enumerate(mine):
            share = kids[k * per_device:(k + 1) * per_device]
            d.children = [str(r[0]) for r in share[:opts.doses]]
            d.refused = [str(r[0]) for r in share[opts.doses:]]
            with_bform = [r for r in share[:opts.doses] if r[3] is not None][:opts.lookups]
            for pid, _, custodian, blob in with_bform:
                row = type("Row", (), {"id": pid, "custodian": custodian, "bform_ct": blob})
                d.lookups.append((codec.decrypt_column(rt.cipher, row, "bform"), str(pid)))
    with rt.sessions.begin() as s:
        for d in devices:
            create_user(s, rt, UserCreate(username=d.username, display_name=f"Campaign vaccinator {d.index}",
                                          password=d.password, role="clinic_worker", scope_code=d.facility))
    rt.engine.dispose()
    return devices


def login_all(base: str, devices: list[Device], threads: int = 4) -> None:
    parts = base.split("://", 1)[1].split(":")
    host, port = parts[0], int(parts[1])

    def one(d: Device) -> None:
        conn = http.client.HTTPConnection(host, port, timeout=120)
        body = f"username={d.username}&password={d.password}"
        conn.request("POST", "/api/v1/auth/token", body, {"Content-Type": "application/x-www-form-urlencoded"})
        resp = conn.getresponse()
        payload = resp.read()
        conn.close()
        if resp.status != 200:
            raise RuntimeError(f"login of campaign device {d.index} answered {resp.status}")
        d.token = json.loads(payload)["access_token"]

    _parallel(one, devices, threads)


def _parallel(fn, items: list, threads: int) -> None:
    errors: list[BaseException] = []
    queue = list(items)
    lock = threading.Lock()

    def loop() -> None:
        while True:
            with lock:
                if not queue or errors:
                    return
                item = queue.pop()
            try:
                fn(item)
            except BaseException as exc:  # noqa: BLE001 - re-raised in the caller's thread
                with lock:
                    errors.append(exc)

    ts = [threading.Thread(target=loop, daemon=True) for _ in range(threads)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    if errors:
        raise errors[0]


# --- one device's upload ---------------------------------------------------------------------

@dataclass
class Upload:
    """What one burst sends, for the check against the database afterwards."""
    doses: set[str] = field(default_factory=set)          # dose.record ids, completed
    refusals: set[str] = field(default_factory=set)       # dose.record ids, not-done
    patients: set[str] = field(default_factory=set)       # patient.create ids
    children: set[str] = field(default_factory=set)       # every patient a dose was recorded for


def batch_for(d: Device, registrations: int, rng: random.Random, nonce: int, today: str, names: dict,
              upload: Upload) -> tuple[bytes, int]:
    """The device's day in upload order: newborns and their birth doses, campaign doses, refusals."""
    items: list[dict] = []
    for j in range(registrations):
        pid = str(uuid.uuid4())
        sex = rng.choice(("female", "male"))
        family = rng.choice(names["family"])
        serial = f"{nonce % 10000:04d}{d.index % 10000:04d}{j % 100:02d}{rng.randrange(100):02d}"
        items.append({"op": "patient.create", "data": {
            "id": pid, "given_name": rng.choice(names["female_given" if sex == "female" else "male_given"]),
            "family_name": family, "sex": sex, "birth_date": today, "bform": _nadra("9" + serial),
            "guardian": {"name": rng.choice(names["female_given"]) + " " + family, "relationship": "mother",
                         "cnic": _nadra("8" + serial)},
            "phone": f"0300-{rng.randrange(10**7):07d}", "address": f"House {rng.randrange(1, 400)}, campaign area"}})
        upload.patients.add(pid)
        for vaccine, number in (("BCG", 1), ("OPV", 0)):
            did = str(uuid.uuid4())
            items.append({"op": "dose.record", "patient_id": pid, "data": {
                "id": did, "vaccine": vaccine, "dose_number": number, "date_given": today, "lot_number": "CAMP-2026-1"}})
            upload.doses.add(did)
            upload.children.add(pid)
    for pid in d.children:
        did = str(uuid.uuid4())
        items.append({"op": "dose.record", "patient_id": pid, "data": {
            "id": did, "vaccine": "OPV", "dose_number": 1, "date_given": today, "lot_number": "CAMP-2026-1",
            "override_reason": CAMPAIGN_REASON}})
        upload.doses.add(did)
        upload.children.add(pid)
    for pid in d.refused:
        did = str(uuid.uuid4())
        items.append({"op": "dose.record", "patient_id": pid, "data": {
            "id": did, "vaccine": "OPV", "dose_number": 1, "date_given": today, "status": "not-done",
            "not_done_reason": rng.choice(REFUSALS)}})
        upload.refusals.add(did)
        upload.children.add(pid)
    return json.dumps({"items": items}).encode(), len(items)


def _nadra(digits: str) -> str:
    return f"{digits[:5]}-{digits[5:12]}-{digits[12]}"


@dataclass
class DeviceResult:
    ack_ms: float = 0.0                 # first send of the batch -> its acknowledgement (resends included)
    lookup_ms: list[float] = field(default_factory=list)
    sends: int = 0
    dropped: int = 0                    # deliberate drops (not errors)
    retried_409: int = 0
    status_5xx: int = 0
    transport_errors: int = 0
    other_status: int = 0
    lookup_misses: int = 0
    created: int = 0
    duplicate: int = 0
    rejected: int = 0
    replayed: bool = False
    acked: bool = False
    rejected_reasons: dict = field(default_factory=dict)


def run_device(d: Device, host: str, port: int, body: bytes, start: threading.Barrier, out: DeviceResult,
               gate: threading.Semaphore) -> None:
    start.wait()
    with gate:
        conn = http.client.HTTPConnection(host, port, timeout=600)
        auth = {"Authorization": f"Bearer {d.token}"}
        for bform, expected in d.lookups:
            t0 = time.perf_counter()
            try:
                conn.request("POST", "/api/v1/patients/search", json.dumps({"system": "bform", "value": bform}),
                             {**auth, **JSON_CT})
                resp = conn.getresponse()
                payload = resp.read()
            except (OSError, http.client.HTTPException):
                out.transport_errors += 1
                conn.close()
                conn = http.client.HTTPConnection(host, port, timeout=600)
                continue
            out.lookup_ms.append((time.perf_counter() - t0) * 1000)
            if resp.status >= 500:
                out.status_5xx += 1
            if resp.status != 200 or expected not in {m.get("id") for m in json.loads(payload)}:
                out.lookup_misses += 1
        headers = {**auth, **JSON_CT, "Idempotency-Key": str(uuid.uuid4())}
        t0 = time.perf_counter()
        drop = d.drops
        for _ in range(50):
            out.sends += 1
            try:
                if drop:  # the whole request goes out, then the connection dies before the answer is read
                    conn.request("POST", "/api/v1/sync/batch", body, headers)
                    conn.sock.shutdown(socket.SHUT_RDWR)
                    conn.close()
                    out.dropped += 1
                    drop = False
                    time.sleep(0.2)  # the phone notices, reconnects and resends
                    conn = http.client.HTTPConnection(host, port, timeout=600)
                    continue
                conn.request("POST", "/api/v1/sync/batch", body, headers)
                resp = conn.getresponse()
                payload = resp.read()
            except (OSError, http.client.HTTPException):
                out.transport_errors += 1
                conn.close()
                conn = http.client.HTTPConnection(host, port, timeout=600)
                time.sleep(0.5)
                continue
            if resp.status == 409:  # the dropped request still holds the key: wait, resend
                out.retried_409 += 1
                time.sleep(min(2.0, float(resp.getheader("Retry-After") or 1)) / 2)
                continue
            if resp.status >= 500:
                out.status_5xx += 1
                time.sleep(min(2.0, float(resp.getheader("Retry-After") or 1)))
                continue  # retry with the same key (outcome-unknown: it replays or makes it once)
            if resp.status != 200:
                out.other_status += 1
                break
            doc = json.loads(payload)
            out.created, out.duplicate, out.rejected = doc["created"], doc["duplicate"], doc["rejected"]
            out.rejected_reasons = dict(Counter(f"{r.get('reason')}:{r.get('field')}" for r in doc["results"]
                                                if r["result"] == "rejected"))
            out.replayed = resp.getheader("Idempotent-Replayed") == "true"
            out.acked = True
            break
        out.ack_ms = (time.perf_counter() - t0) * 1000
        conn.close()


def burst(base: str, devices: list[Device], opts: Options, nonce: int) -> tuple[dict, Upload]:
    """All devices start together; returns the burst's figures and what was sent."""
    from registry.demo.generator import load_names

    host, port = base.split("://", 1)[1].split(":")
    rng, names, today = random.Random(opts.seed + nonce), load_names(), date.today().isoformat()
    upload = Upload()
    bodies = [batch_for(d, opts.registrations, rng, nonce, today, names, upload) for d in devices]
    results = [DeviceResult() for _ in devices]
    barrier = threading.Barrier(len(devices) + 1)
    gate = threading.Semaphore(opts.concurrency or len(devices))
    threads = [threading.Thread(target=run_device, args=(d, host, int(port), b, barrier, r, gate), daemon=True)
               for d, (b, _), r in zip(devices, bodies, results)]
    for t in threads:
        t.start()
    started_at = datetime.now(UTC)
    barrier.wait()
    t0 = time.perf_counter()
    for t in threads:
        t.join()
    seconds = time.perf_counter() - t0
    acks = sorted(r.ack_ms for r in results if r.acked)
    lookups = sorted(x for r in results for x in r.lookup_ms)
    items = sum(n for _, n in bodies)
    total = {k: sum(getattr(r, k) for r in results) for k in (
        "sends", "dropped", "retried_409", "status_5xx", "transport_errors", "other_status", "lookup_misses", "created",
        "duplicate", "rejected")}
    reasons: Counter = Counter()
    for r in results:
        reasons.update(r.rejected_reasons)
    out = {
        "started_at": started_at.isoformat(timespec="seconds"), "seconds": seconds, "devices": len(devices),
        "items": items, "doses_sent": len(upload.doses), "refusals_sent": len(upload.refusals),
        "registrations_sent": len(upload.patients), "lookups": len(lookups),
        "batches_acked": len(acks), "replayed": sum(r.replayed for r in results),
        "batch_p50_ms": _pct(acks, 0.50), "batch_p99_ms": _pct(acks, 0.99), "batch_max_ms": acks[-1] if acks else 0.0,
        "lookup_p50_ms": _pct(lookups, 0.50), "lookup_p99_ms": _pct(lookups, 0.99),
        "doses_per_s": len(upload.doses) / seconds if seconds else 0.0,
        "records_per_s": items / seconds if seconds else 0.0,
        "batches_per_s": len(acks) / seconds if seconds else 0.0,
        "rejected_reasons": dict(reasons), **total,
    }
    out["_started_at"] = started_at
    return out, upload


def _pct(xs: list[float], p: float) -> float:
    if not xs:
        return 0.0
    return statistics.median(xs) if p == 0.5 else xs[min(len(xs) - 1, int(p * len(xs)))]


def verify(url: str, upload: Upload, since: datetime) -> dict:
    """Every dose, refusal and registration of the burst stored exactly once, nothing else
    written for its children since the burst began."""
    sent = sorted(upload.doses | upload.refusals)
    with psycopg.connect(url) as c:
        found = {str(r[0]): r[1] for r in c.execute(
            "SELECT id, status FROM immunizations WHERE id = ANY(%s::uuid[])", [sent])}
        rows_since = c.execute(
            "SELECT count(*) FROM immunizations WHERE patient_id = ANY(%s::uuid[]) AND recorded_at >= %s",
            [sorted(upload.children), since]).fetchone()[0]
        patients = c.execute("SELECT count(*) FROM patients WHERE id = ANY(%s::uuid[])",
                             [sorted(upload.patients)]).fetchone()[0]
    missing = [i for i in sent if i not in found]
    wrong_status = sum(1 for i in upload.doses if found.get(i, "completed") != "completed") + \
        sum(1 for i in upload.refusals if found.get(i, "not-done") != "not-done")
    return {"doses_missing": len(missing), "doses_extra": max(0, rows_since - len(found)),
            "doses_wrong_status": wrong_status, "patients_missing": len(upload.patients) - patients,
            "doses_found": len(found), "rows_since_burst": rows_since}


# --- floors and profile ----------------------------------------------------------------------

def trivial_floor(base: str, seconds: float, generator: str) -> dict:
    return loadgen.run(generator, base, RequestSpec("GET", "/"), duration=seconds, concurrency=32, nonce=0)


class Profile:
    """py-spy on the registry workers (GIL-holding samples, collapsed stacks) during one burst.
    Needs ptrace permission on the workers; when py-spy is missing or refused, says why."""

    def __init__(self, pids: list[int], out_dir: Path, tag: str) -> None:
        self.procs: list[tuple[subprocess.Popen, Path]] = []
        self.note = ""
        exe = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
        if not Path(exe).exists():
            self.note = "py-spy not installed (pip install py-spy)"
            return
        out_dir.mkdir(parents=True, exist_ok=True)
        for pid in pids:
            path = out_dir / f"campaign-{tag}-{pid}.txt"
            p = subprocess.Popen([exe, "record", "-p", str(pid), "-r", "100", "--gil", "--nonblocking", "-f", "raw",
                                  "-o", str(path)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
            self.procs.append((p, path))
        time.sleep(1.0)
        for p, _ in self.procs:
            if p.poll() is not None:
                self.note = "py-spy refused: " + p.stdout.read().decode(errors="replace").strip()[-200:]

    def stop(self) -> dict:
        files = []
        for p, path in self.procs:
            if p.poll() is None:
                p.send_signal(signal.SIGINT)
            try:
                p.wait(60)
            except subprocess.TimeoutExpired:
                p.kill()
            if path.exists():
                files.append(path)
        summary = summarise_profile(files) if files else {}
        return {"note": self.note, "files": [str(f) for f in files], **summary}


# Where a GIL sample goes, first match wins (substrings of the collapsed stack, outermost first).
CATEGORIES = (
    ("audit sealer thread", ("sealing.py",)),
    ("encryption, MACs, blind indexes", ("cryptography", "codec.py", "event_mac", "receipt", "hmac")),
    ("psycopg / SQLAlchemy (statements, round trips, rows)", ("psycopg", "sqlalchemy")),
    ("schedule judgement", ("schedules/", "immunizations/validation", "immunizations/intake", "judge")),
    ("request validation and JSON (pydantic, json)", ("pydantic", "json/", "orjson")),
    ("registry code (services, sync, audit)", ("registry/", "security/")),
    ("HTTP, middleware, FastAPI dependencies", ("starlette", "fastapi", "uvicorn", "h11", "httptools", "api/")),
)


def summarise_profile(files: list[Path]) -> dict:
    shares: Counter = Counter()
    leaves: Counter = Counter()
    total = 0
    for f in files:
        for line in f.read_text(errors="replace").splitlines():
            stack, _, count = line.rpartition(" ")
            if not count.isdigit():
                continue
            n = int(count)
            total += n
            cat = next((name for name, keys in CATEGORIES if any(k in stack for k in keys)), "other (idle loop, threads)")
            shares[cat] += n
            leaves[stack.split(";")[-1].strip()] += n
    if not total:
        return {"samples": 0}
    return {"samples": total, "shares": {k: round(v / total, 3) for k, v in shares.most_common()},
            "top_leaves": [(k, round(v / total, 3)) for k, v in leaves.most_common(12)]}


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
