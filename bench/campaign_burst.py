"""One campaign burst: every device's day as one batch upload, sent at the same moment, with
dropped connections resent under the same Idempotency-Key; then the check that the database
holds every dose, refusal and registration exactly once. Nothing here prints a response body."""

from __future__ import annotations

import http.client
import json
import random
import socket
import statistics
import threading
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, date, datetime

import psycopg

from bench.campaign_devices import Device, Options

CAMPAIGN_REASON = "polio campaign (SIA) dose"
REFUSALS = ("refusal-safety", "refusal-religious", "refusal-too-many", "refusal-child-sick")
JSON_CT = {"Content-Type": "application/json"}


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
                time.sleep(_retry_after(resp) / 2)
                continue
            if resp.status >= 500:
                out.status_5xx += 1
                time.sleep(_retry_after(resp))
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


def _retry_after(resp) -> float:
    """The answer's Retry-After in seconds, at most 2 (a phone retries soon); 1 when absent or a date."""
    try:
        return min(2.0, float(resp.getheader("Retry-After") or 1))
    except ValueError:
        return 1.0


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
