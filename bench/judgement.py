"""`python -m bench.judgement`: the CPU a dose of a batch sync upload costs in process, this tree
against another (main), and where it goes (the schedule judgement's share), issue 17.

    python -m bench.judgement [--pg SERVER_URL] [--children 1500] [--batches 30] [--rounds 4]
                              [--before-ref main] [--profile]

One fresh PostgreSQL database (created on SERVER_URL, dropped at the end) with one clinic worker
and `--children` children of its facility, born over the last two years, each with a realistic
history (the EPI doses due at their age, a few reported with no number, a few late) recorded
through the batch route itself. Each measurement is a separate process (`--one`) running the
registry in process (FastAPI's TestClient, no network) from this tree or from the tree of
`--before-ref` (exported with `git archive` under .bench/): it posts `--batches` uploads of 50
doses (a campaign day: OPV and the dose each child is due for, a fifth reported with no number,
every administered dose with an override reason so that it is recorded) and reports the
process's CPU a dose (everything in the process: client, HTTP, service; the database's CPU is not
in it), the CPU a dose of the thread judging the upload (`batch.plan`: the snapshot's waits for
the database are not CPU) and the wall time a batch. Rounds alternate A/B/B/A; the result is the median of the
per-round ratios. `--profile` adds one py-spy `--gil` record of each tree (collapsed stacks under
.bench/) and the share of samples in the schedule judgement (`schedules/engine.py` and the
judgement modules under it). No value of a synthetic patient is printed.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import secrets
import statistics
import subprocess
import sys
import time
import uuid
from collections import Counter
from datetime import date, timedelta
from pathlib import Path

DEFAULT_SERVER = "postgresql://postgres@127.0.0.1:5432/postgres"
PASSWORD = "bench-judgement-passphrase-2026"
FACILITY = "F-LAH-02"
BATCH = 50
# (vaccine, dose number, age in days it is due at): the EPI primary series, roughly
DUE = [("BCG", 1, 0), ("OPV", 0, 0), ("HEPB", 1, 0), ("OPV", 1, 42), ("PENTA", 1, 42), ("PCV", 1, 42), ("ROTA", 1, 42),
       ("OPV", 2, 70), ("PENTA", 2, 70), ("PCV", 2, 70), ("ROTA", 2, 70), ("OPV", 3, 98), ("PENTA", 3, 98),
       ("PCV", 3, 98), ("IPV", 1, 98), ("MR", 1, 270), ("TCV", 1, 270), ("IPV", 2, 270), ("MR", 2, 450)]
REASON = "benchmark: campaign dose on purpose"


def _settings(url: str, key_dir: str):
    from registry.settings import Settings

    return Settings(env="test", database_url=url, key_dir=key_dir, audit={"seal_interval_seconds": 0},
                    reports={"refresh_interval_seconds": 0}, limits={"rate_limit_requests": 0},
                    tokens={"ttl_seconds": 3600}, linkage_check=False)


def _history(rng: random.Random, birth: date, today: date) -> list[dict]:
    out = []
    for vaccine, number, at in DUE:
        when = birth + timedelta(days=at + rng.choice((0, 0, 0, 3, 7, 15, 40)))
        if when > today or rng.random() < 0.1:
            continue
        dose = {"id": str(uuid.uuid4()), "vaccine": vaccine, "date_given": when.isoformat(),
                "provenance": "reported", "report_origin": "home_record"}
        if rng.random() > 0.15:
            dose["dose_number"] = number
        out.append(dose)
    return out


def _campaign_item(rng: random.Random, pid: str, birth: date, today: date) -> dict:
    age = (today - birth).days
    due = [d for d in DUE if d[2] <= age] or DUE[:1]
    vaccine, number, _ = rng.choice(due[-4:]) if rng.random() < 0.5 else ("OPV", None, 0)
    data = {"id": str(uuid.uuid4()), "vaccine": vaccine, "date_given": today.isoformat(), "lot_number": "CAMP-2026"}
    if number is None or rng.random() < 0.2:  # reported with no number: the number is inferred
        data |= {"provenance": "reported", "report_origin": "home_record"}
    else:
        data |= {"dose_number": number, "override_reason": REASON}
    return {"op": "dose.record", "patient_id": pid, "data": data}


def prepare(url: str, key_dir: str, children: int, seed: int = 17) -> None:
    from fastapi.testclient import TestClient

    from api.app import create_app
    from registry import bootstrap
    from registry.clock import local_today
    from registry.runtime import Runtime
    from registry.users.schemas import UserCreate
    from registry.users.service import create_user

    rt = Runtime.build(_settings(url, key_dir))
    rt.keyring.create_missing = True
    bootstrap.init(rt)
    with rt.sessions.begin() as s:
        create_user(s, rt, UserCreate(username="clinic.judgement", display_name="bench", password=PASSWORD,
                                      role="clinic_worker", scope_code=FACILITY))
    rng, today, kids = random.Random(seed), local_today(), []
    with TestClient(create_app(rt.settings, rt)) as c:
        h = {"Authorization": "Bearer " + c.post("/api/v1/auth/token", data={"username": "clinic.judgement",
                                                                         "password": PASSWORD}).json()["access_token"]}
        items = []
        for i in range(children):
            birth = today - timedelta(days=rng.randint(20, 720))
            r = c.post("/api/v1/patients", headers=h, json={
                "given_name": f"Bench{i}", "family_name": "Judgement", "sex": rng.choice(("female", "male")),
                "birth_date": birth.isoformat(), "guardian": {"name": f"Guardian{i}", "relationship": "mother"}})
            if r.status_code != 201:
                continue
            kids.append((r.json()["id"], birth.isoformat()))
            items += [{"op": "dose.record", "patient_id": kids[-1][0], "data": d} for d in _history(rng, birth, today)]
            if len(items) > 200 or i == children - 1:
                r = c.post("/api/v1/sync/batch", headers=h | {"Idempotency-Key": str(uuid.uuid4())}, json={"items": items})
                assert r.status_code == 200, r.status_code
                items = []
    Path(key_dir, "children.json").write_text(json.dumps(kids))
    rt.engine.dispose()


def one(url: str, key_dir: str, batches: int, seed: int, profile: str | None) -> dict:
    """Runs in its own process, on the tree its PYTHONPATH names."""
    import registry

    assert str(Path(registry.__file__).resolve()).startswith(os.environ.get("PYTHONPATH", "")), registry.__file__
    from fastapi.testclient import TestClient

    from api.app import create_app
    from registry.runtime import Runtime

    from registry.immunizations import batch as dose_batch

    # thread CPU judging the upload: inside `batch.plan` (the sync path) or `batch.judge` (the event
    # loop's, where it exists), the outermost call only; the snapshot's waits for the database are not CPU
    planned, depth = [0.0], [0]

    def timed(real):
        def wrapper(*args, **kwargs):
            depth[0] += 1
            t0 = time.thread_time()
            try:
                return real(*args, **kwargs)
            finally:
                depth[0] -= 1
                if depth[0] == 0:
                    planned[0] += time.thread_time() - t0
        return wrapper

    for name in ("plan", "judge"):
        if hasattr(dose_batch, name):
            setattr(dose_batch, name, timed(getattr(dose_batch, name)))
    kids = json.loads(Path(key_dir, "children.json").read_text())
    rng, today = random.Random(seed), date.today()
    rt = Runtime.build(_settings(url, key_dir))
    with TestClient(create_app(rt.settings, rt)) as c:
        h = {"Authorization": "Bearer " + c.post("/api/v1/auth/token", data={"username": "clinic.judgement",
                                                                         "password": PASSWORD}).json()["access_token"]}
        bodies = []
        for _ in range(batches + 2):
            chosen = rng.sample(kids, BATCH)
            bodies.append(json.dumps({"items": [_campaign_item(rng, pid, date.fromisoformat(b), today)
                                                for pid, b in chosen]}).encode())
        for body in bodies[:2]:  # warm-up: caches, prepared statements
            c.post("/api/v1/sync/batch", content=body, headers=h | {"Content-Type": "application/json",
                                                                      "Idempotency-Key": str(uuid.uuid4())})
        spy = None
        if profile:
            exe = str(Path(__file__).resolve().parent.parent / ".bench" / "py-spy")
            exe = exe if Path(exe).exists() else "py-spy"
            spy = subprocess.Popen([exe, "record", "-p", str(os.getpid()), "-r", "200", "--gil", "-f", "raw",
                                    "-o", profile], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            time.sleep(1.0)
        created, walls = 0, []
        cpu0, planned[0] = time.process_time(), 0.0
        for body in bodies[2:]:
            t0 = time.perf_counter()
            r = c.post("/api/v1/sync/batch", content=body, headers=h | {"Content-Type": "application/json",
                                                                          "Idempotency-Key": str(uuid.uuid4())})
            walls.append(time.perf_counter() - t0)
            assert r.status_code == 200, r.status_code
            created += r.json()["created"]
        cpu = time.process_time() - cpu0
        if spy is not None:
            spy.send_signal(2)
            spy.wait(timeout=60)
    rt.engine.dispose()
    return {"cpu_ms_a_dose": cpu * 1000 / (batches * BATCH), "plan_ms_a_dose": planned[0] * 1000 / (batches * BATCH), "batch_p50_ms": statistics.median(walls) * 1000,
            "created": created, "sent": batches * BATCH}


JUDGEMENT = ("schedules/engine.py", "schedules/memo.py", "validation.py:judge", "validation.py:inferred_numbers",
             "batch.py:_renumber")


def shares(path: str) -> dict:
    """Share of GIL samples whose stack passes through the schedule engine / the judgement."""
    total, counts = 0, Counter()
    for line in Path(path).read_text().splitlines():
        stack, _, n = line.rpartition(" ")
        if not n.isdigit():
            continue
        total += int(n)
        if "engine.py" in stack and "schedules" in stack:
            counts["engine"] += int(n)
        if "(judge (" in stack.replace(" (/", " (") or "judge (" in stack or "inferred_numbers (" in stack:
            counts["judge+renumber"] += int(n)
        if "plan (" in stack:
            counts["plan (judging the upload)"] += int(n)
        if "build (" in stack and "intake.py" in stack:
            counts["intake.build"] += int(n)
    return {k: round(100 * v / total, 1) for k, v in counts.items()} | {"samples": total}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--pg", default=DEFAULT_SERVER)
    ap.add_argument("--children", type=int, default=1500)
    ap.add_argument("--batches", type=int, default=30)
    ap.add_argument("--rounds", type=int, default=4)
    ap.add_argument("--before-ref", default="main")
    ap.add_argument("--profile", action="store_true")
    ap.add_argument("--keep", help="reuse (or create and keep) this database name and key directory", default=None)
    ap.add_argument("--one", nargs=4, metavar=("URL", "KEY_DIR", "SEED", "PROFILE"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.one:
        url, key_dir, seed, prof = args.one
        print(json.dumps(one(url, key_dir, args.batches, int(seed), None if prof == "-" else prof)))
        return
    from bench.gate import export_ref
    from bench.population import create_database, drop_database
    from bench.servers import REPO

    before = export_ref(args.before_ref)
    name = args.keep or f"nhr_bench_judgement_{secrets.token_hex(4)}"
    key_dir = str(REPO / ".bench" / f"keys-{name}")
    Path(key_dir).mkdir(parents=True, exist_ok=True)
    fresh = not Path(key_dir, "children.json").exists()
    if fresh:
        url = create_database(args.pg, name)
        prepare(url, key_dir, args.children)
    else:
        url = args.pg.rpartition("/")[0] + "/" + name
    trees = {"before": before, "after": REPO}
    results: dict[str, list[dict]] = {"before": [], "after": []}

    def run(tag: str, seed: int, prof: str = "-") -> dict:
        env = {**os.environ, "PYTHONPATH": str(trees[tag])}
        out = subprocess.run(["nice", "-n", "5", sys.executable, str(Path(__file__).resolve()), "--batches", str(args.batches),
                              "--one", url, key_dir, str(seed), prof], cwd=trees[tag], env=env, capture_output=True,
                             text=True, check=True)
        return json.loads(out.stdout.strip().splitlines()[-1])

    try:
        for r in range(args.rounds):
            order = ("before", "after") if r % 2 == 0 else ("after", "before")
            for tag in order:
                res = run(tag, 1000 + r) | {"load": os.getloadavg()[0]}
                results[tag].append(res)
                print(f"round {r} {tag:6}: {res['cpu_ms_a_dose']:.3f} ms CPU a dose ({res['plan_ms_a_dose']:.3f} in batch.plan), batch p50 {res['batch_p50_ms']:.0f} ms,"
                      f" {res['created']}/{res['sent']} created, load {res['load']:.1f}", flush=True)
        for what in ("cpu_ms_a_dose", "plan_ms_a_dose"):
            ratios = [a[what] / b[what] for a, b in zip(results["after"], results["before"]) if b[what]]
            if not ratios:
                continue
            print(f"{what} after/before: median {statistics.median(ratios):.3f} (rounds {', '.join(f'{x:.3f}' for x in ratios)})")
        if args.profile:
            for tag in ("before", "after"):
                path = str(REPO / ".bench" / f"judgement-{tag}.txt")
                run(tag, 99, path)
                print(f"py-spy {tag}: {shares(path)} ({path})")
    finally:
        if not args.keep:
            drop_database(args.pg, name)


if __name__ == "__main__":
    main()
