"""Upload workloads measured by their own client loop: batch sync uploads and FHIR transaction
Bundles. Each request carries many records, so these are reported in records per second.

A load generator repeating one request cannot measure them: a resent batch is all `duplicate`
(its items' receipts match) and a resent Bundle creates nothing new either way. Here every
request is built fresh: K doses for K distinct children of one clinic's facility, each with a
client-generated UUID (as an offline device makes them), OPV dose 1 given today with an
`override_reason` (the same reason the `dose` workload has one: repeated on purpose, so every
dose passes full validation against the schedule and is recorded). Each call (a round) doses
the children of another clinic (`round_clinic`), children no earlier round dosed.

`threads` clients (one keep-alive HTTP connection each, default 4: devices uploading at the same
time, not 32 interactive users) post until the duration is over; the requests still in flight
then are waited for and counted, and the elapsed time includes them. Latencies are per request.
Nothing here prints a response body (batch results carry access codes of created patients).
"""

from __future__ import annotations

import http.client
import json
import random
import statistics
import threading
import time
import uuid
from datetime import date
from urllib.parse import urlencode, urlsplit

from bench.population import Population

BATCH_DOSES = 50      # doses per batch sync upload
BUNDLE_ENTRIES = 20   # Immunizations per FHIR transaction Bundle
EPI = "https://nhr.gov.pk/fhir/CodeSystem/epi-antigen"
OVERRIDE_EXT = "https://nhr.gov.pk/fhir/StructureDefinition/schedule-override-reason"
REASON = "benchmark: repeated dose on purpose"


def _children(pop: Population, rng: random.Random, k: int, children: list[str] | None) -> list[str]:
    pool = pop.read_ids if children is None else children
    return rng.sample(pool, min(k, len(pool)))


class _Draw:
    """Children in a shuffled order shared by a call's client threads: each child is dosed once
    before any child is dosed again (within a call; only a small clinic runs out)."""

    def __init__(self, children: list[str], seed: int) -> None:
        self._children, self._rng, self._lock = list(children), random.Random(seed), threading.Lock()
        self._order: list[str] = []

    def take(self, k: int) -> list[str]:
        with self._lock:
            out: list[str] = []
            while len(out) < min(k, len(self._children)):
                if not self._order:
                    self._order = self._children[:]
                    self._rng.shuffle(self._order)
                pid = self._order.pop()
                if pid not in out:
                    out.append(pid)
            return out


def _login(base: str, username: str, password: str) -> str:
    parts = urlsplit(base)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=60)
    try:
        conn.request("POST", "/api/v1/auth/token", urlencode({"username": username, "password": password}),
                     {"Content-Type": "application/x-www-form-urlencoded"})
        resp = conn.getresponse()
        payload = resp.read()
        if resp.status != 200:
            raise RuntimeError(f"the upload clinic's login answered {resp.status}")
        return json.loads(payload)["access_token"]
    finally:
        conn.close()


def round_clinic(pop: Population, base: str, token: str) -> tuple[list[str] | None, str]:
    """The children this call (a round, or a warm-up) doses and the token to dose them with: those
    of the next of the population's upload clinics (bench/population.py UPLOAD_CLINICS), so no
    round doses children an earlier round dosed (the clinics are reused in turn only after all
    of them); without upload clinics, the benchmark facility's children and `token`. The first
    call for a server logs every upload clinic in, so no login's CPU falls in a measured round."""
    if not pop.upload_clinics:
        return None, token
    tokens = pop.upload_tokens.setdefault(base, {})
    if not tokens:
        for username, password, facility in pop.upload_clinics:
            tokens[facility] = _login(base, username, password)
    facility = pop.upload_clinics[pop.upload_rounds % len(pop.upload_clinics)][2]
    pop.upload_rounds += 1
    return pop.upload_ids[facility], tokens[facility]


def batch_body(pop: Population, rng: random.Random, k: int = BATCH_DOSES, *,
               children: list[str] | None = None) -> tuple[bytes, int]:
    """A device's upload: one `dose.record` item per child, K distinct children."""
    today = date.today().isoformat()
    items = [{"op": "dose.record", "patient_id": pid,
              "data": {"id": str(uuid.uuid4()), "vaccine": "OPV", "dose_number": 1, "date_given": today,
                       "lot_number": "OP2026-001", "override_reason": REASON}}
             for pid in _children(pop, rng, k, children)]
    return json.dumps({"items": items}).encode(), len(items)


def bundle_body(pop: Population, rng: random.Random, k: int = BUNDLE_ENTRIES, *,
                children: list[str] | None = None) -> tuple[bytes, int]:
    """A FHIR transaction Bundle of K Immunizations for K distinct children."""
    today = date.today().isoformat()
    entries = []
    for pid in _children(pop, rng, k, children):
        rid = str(uuid.uuid4())
        entries.append({"fullUrl": f"urn:uuid:{rid}", "request": {"method": "POST", "url": "Immunization"},
                        "resource": {"resourceType": "Immunization", "id": rid, "status": "completed",
                                     "vaccineCode": {"coding": [{"system": EPI, "code": "OPV"}]},
                                     "patient": {"reference": f"Patient/{pid}"}, "occurrenceDateTime": today,
                                     "protocolApplied": [{"doseNumberPositiveInt": 1}], "lotNumber": "OP2026-001",
                                     "extension": [{"url": OVERRIDE_EXT, "valueString": REASON}]}})
    return json.dumps({"resourceType": "Bundle", "type": "transaction", "entry": entries}).encode(), len(entries)


KINDS = {
    # name: (path, content type, body builder, unit, idempotency key per request)
    "batch_sync": ("/api/v1/sync/batch", "application/json", batch_body, "doses", True),
    "fhir_bundle": ("/fhir/R4", "application/fhir+json", bundle_body, "resources", False),
}


def _accepted(name: str, status: int, payload: bytes, sent: int) -> int:
    """Records stored by one response: a batch's `created` count; all of a Bundle's entries on
    2xx (a transaction is all or nothing)."""
    if status >= 300:
        return 0
    if name == "batch_sync":
        return int(json.loads(payload).get("created", 0))
    return sent


def measure(name: str, base: str, pop: Population, token: str, *, duration: float, threads: int = 4,
            seed: int = 0) -> dict:
    path, ctype, build, unit, idempotent = KINDS[name]
    parts = urlsplit(base)
    children, token = round_clinic(pop, base, token)
    draw = _Draw(pop.read_ids if children is None else children, seed)
    k = BATCH_DOSES if name == "batch_sync" else BUNDLE_ENTRIES
    lock = threading.Lock()
    latencies: list[float] = []
    totals = {"records": 0, "sent": 0, "non2xx": 0, "errors": 0}

    def client(i: int, stop_at: float) -> None:
        rng = random.Random(seed * 1009 + i)
        conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=120)
        while time.perf_counter() < stop_at:
            body, sent = build(pop, rng, children=draw.take(k))
            headers = {"Authorization": f"Bearer {token}", "Content-Type": ctype}
            if idempotent:
                headers["Idempotency-Key"] = str(uuid.uuid4())
            t0 = time.perf_counter()
            try:
                conn.request("POST", path, body, headers)
                resp = conn.getresponse()
                payload = resp.read()
                got = _accepted(name, resp.status, payload, sent)
            except (OSError, http.client.HTTPException, ValueError):
                conn.close()
                conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=120)
                with lock:
                    totals["errors"] += 1
                continue
            with lock:
                latencies.append(time.perf_counter() - t0)
                totals["records"] += got
                totals["sent"] += sent
                totals["non2xx"] += resp.status >= 300
        conn.close()

    start = time.perf_counter()
    workers = [threading.Thread(target=client, args=(i, start + duration), daemon=True) for i in range(threads)]
    for t in workers:
        t.start()
    for t in workers:
        t.join()
    seconds = time.perf_counter() - start
    latencies.sort()

    def pct(p: float) -> float:
        return latencies[min(len(latencies) - 1, int(p * len(latencies)))] * 1000 if latencies else 0.0

    return {"rate": totals["records"] / seconds, "unit": unit, "requests": len(latencies),
            "request_rate": len(latencies) / seconds, "seconds": seconds,
            "p50_ms": statistics.median(latencies) * 1000 if latencies else 0.0, "p99_ms": pct(0.99),
            "non2xx": totals["non2xx"], "errors": totals["errors"],
            "refused_records": totals["sent"] - totals["records"], "threads": threads}
