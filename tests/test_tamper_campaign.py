"""Tamper campaign: a clean sealed log, then well over 1,000 randomly injected tampers on its export
(the realistic attack: a superuser's copy), 20 directly in a throwaway database with the
append-only triggers disabled, and no false alarm on a clean log of 100,000 events.

Every tamper is made on a fresh copy (export records) or rolled back (database), and every one
must be reported by verification. Truncating the log *together with* its checkpoints leaves a
shorter but self-consistent log: only a checkpoint kept from before catches that, so those
tampers are verified against the last checkpoint the auditor saw (`trusted`), as the README says.
"""

from __future__ import annotations

import json
import random
import time
import uuid
from datetime import UTC, datetime, timedelta

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from sqlalchemy import insert, text

from conftest import drop_database, fresh_database_url, make_settings, is_postgres
from registry import bootstrap
from registry.audit_log import sealing
from registry.runtime import Runtime
from security.access.principal import AccessContext
from security.audit import leaf, verify
from security.audit.checkpoint import Checkpoint, Signer
from security.audit.merkle import Frontier
from security.audit.sealer import EVENTS, SUBJECTS
from security.audit.trail import OUTCOMES, SUCCESS, AuditTrail, PatientRef

TABLES = ("audit_events", "audit_event_subjects", "audit_log_leaves", "audit_checkpoints")


@pytest.fixture(scope="module")
def sealed(tmp_path_factory):
    """A throwaway database with 400 synthetic events sealed in 8 batches (8 checkpoints)."""
    tmp = tmp_path_factory.mktemp("tamper")
    url = fresh_database_url(tmp, "tamper")
    rt = Runtime.build(make_settings(url, tmp / "keyring"))
    bootstrap.upgrade(url)
    rng = random.Random(7)
    trail = AuditTrail(AccessContext(None, "TREAT", "req-tamper", "10.0.0.1"))
    for batch in range(8):
        rows, subjects = [], []
        for i in range(50):
            row = trail.build(rng.choice(["patient.read", "patient.list", "immunization.create"]), rng.choice(OUTCOMES),
                              resource_id=uuid.uuid4(), patient=PatientRef(uuid.uuid4(), "PK-PB", "PK-PB-LAH"),
                              detail={"n": i, "batch": batch})
            row["break_glass"] = rng.random() < 0.1
            rows.append(row)
            subjects += [{"event_id": row["id"], "patient_id": uuid.uuid4()} for _ in range(rng.randint(0, 2))]
        of = {}
        for sub in subjects:
            of.setdefault(sub["event_id"], []).append(sub["patient_id"])
        with rt.sessions.begin() as s:
            s.execute(insert(EVENTS), [rt.event_mac.sign(r, of.get(r["id"], ())) for r in rows])
            if subjects:
                s.execute(insert(SUBJECTS), subjects)
        sealing.seal_all(rt)
    path = tmp / "clean.ndjson"
    sealing.export(rt, path)
    records = [json.loads(line) for line in path.read_text().splitlines()]
    yield rt, records
    rt.engine.dispose()
    drop_database(url)


def _parts(records):
    header = records[0]
    events = [r for r in records[1:] if r["kind"] == "event"]
    leaves = [r for r in records[1:] if r["kind"] == "leaf"]
    cps = [r for r in records[1:] if r["kind"] == "checkpoint"]
    return header, events, leaves, cps


def _event_hash(e: dict) -> str:
    return leaf.text_leaf_hash([e["event"][f] for f in leaf.FIELDS], leaf.canonical_subjects(e["subjects"])).hex()


def _mutate_text(rng, value):
    if value is None:
        return "x"
    if value in ("true", "false"):
        return "false" if value == "true" else "true"
    if value == "":
        return None
    i = rng.randrange(len(value))
    c = "0" if value[i] != "0" else "1"
    return rng.choice([value[:i] + c + value[i + 1:], None, value + " "])


def _resign(cps, leaves_hashes, sizes, signer):
    """Checkpoints at `sizes` recomputed over `leaves_hashes` and signed by `signer`."""
    out, f, hashes = [], Frontier(), iter(leaves_hashes)
    for size in sizes:
        while f.size < size:
            f.append(bytes.fromhex(next(hashes)))
        out.append({"kind": "checkpoint", **signer.sign(size, f.root(), datetime.now(UTC)).as_json()})
    return out


def _tamper(rng, records, forger):
    """One random tamper on a copy of the export; returns (kind, records, trusted)."""
    header, events, leaves, cps = _parts(records)
    events, leaves, cps = [dict(e) for e in events], [dict(x) for x in leaves], [dict(c) for c in cps]
    kind = rng.choice(["field", "subjects", "delete", "delete_renumber", "swap_positions", "swap_contents",
                       "insert", "insert_sealed", "truncate_events", "truncate_all", "rewrite_tail", "checkpoint"])
    trusted = None
    if kind == "field":
        e = rng.choice(events)
        e["event"] = dict(e["event"])
        name = rng.choice(leaf.FIELDS[1:])
        new = _mutate_text(rng, e["event"][name])
        e["event"][name] = new if new != e["event"][name] else (e["event"][name] or "") + "x"
    elif kind == "subjects":
        e = rng.choice(events)
        e["subjects"] = e["subjects"][1:] if e["subjects"] else [str(uuid.uuid4())]
    elif kind == "delete":
        events.pop(rng.randrange(len(events)))
    elif kind == "delete_renumber":
        i = rng.randrange(len(leaves))
        gone = leaves.pop(i)["event_id"]
        events = [e for e in events if e["event"]["id"] != gone]
        for p, x in enumerate(leaves):
            x["position"] = p
    elif kind == "swap_positions":
        i, j = rng.sample(range(len(leaves)), 2)
        leaves[i]["event_id"], leaves[j]["event_id"] = leaves[j]["event_id"], leaves[i]["event_id"]
        if rng.random() < 0.5:
            leaves[i]["leaf_hash"], leaves[j]["leaf_hash"] = leaves[j]["leaf_hash"], leaves[i]["leaf_hash"]
    elif kind == "swap_contents":
        a, b = rng.sample(range(len(events)), 2)
        ea, eb = dict(events[a]["event"]), dict(events[b]["event"])
        ea["id"], eb["id"] = eb["id"], ea["id"]
        events[a], events[b] = {**events[b], "event": ea}, {**events[a], "event": eb}
    elif kind == "insert":
        e = json.loads(json.dumps(rng.choice(events)))
        e["event"]["id"] = str(uuid.uuid4())
        events.insert(rng.randrange(len(events)), e)
    elif kind == "insert_sealed":
        e = json.loads(json.dumps(rng.choice(events)))
        e["event"]["id"] = str(uuid.uuid4())
        events.append(e)
        i = rng.randrange(len(leaves) + 1)
        leaves.insert(i, {"kind": "leaf", "position": i, "event_id": e["event"]["id"], "leaf_hash": _event_hash(e)})
        for p, x in enumerate(leaves):
            x["position"] = p
    elif kind == "truncate_events":
        k = rng.randint(1, 60)
        gone = {x["event_id"] for x in leaves[-k:]}
        leaves = leaves[:-k] if rng.random() < 0.5 else leaves
        events = [e for e in events if e["event"]["id"] not in gone]
    elif kind == "truncate_all":  # events, leaves and the checkpoints above the cut
        trusted = (cps[-1]["tree_size"], verify.trusted_from_json(cps[-1])[1])
        cut = rng.choice([c["tree_size"] for c in cps[:-1]])
        gone = {x["event_id"] for x in leaves[cut:]}
        leaves, cps = leaves[:cut], [c for c in cps if c["tree_size"] <= cut]
        events = [e for e in events if e["event"]["id"] not in gone]
    elif kind == "rewrite_tail":  # edit events from a position on, recompute every hash, re-sign
        start = rng.randrange(len(leaves))
        by_id = {e["event"]["id"]: e for e in events}
        for x in leaves[start:]:
            e = by_id[x["event_id"]]
            e["event"] = {**e["event"], "outcome": "success" if e["event"]["outcome"] != "success" else "denied"}
            x["leaf_hash"] = _event_hash(e)
        sizes = [c["tree_size"] for c in cps]
        resigned = _resign(cps, [x["leaf_hash"] for x in leaves], sizes, forger)
        cps = [c if c["tree_size"] <= start else resigned[i] for i, c in enumerate(cps)]
    else:  # replaced checkpoint
        i = rng.randrange(len(cps))
        c = cps[i]
        how = rng.choice(["root", "signature", "size", "time", "other_root", "forged"])
        if how == "root":
            c["root_hash"] = verify.base64.b64encode(bytes(rng.getrandbits(8) for _ in range(32))).decode()
        elif how == "signature":
            sig = bytearray(verify.base64.b64decode(c["signature"]))
            sig[rng.randrange(64)] ^= 1 << rng.randrange(8)
            c["signature"] = verify.base64.b64encode(bytes(sig)).decode()
        elif how == "size":
            c["tree_size"] = c["tree_size"] - rng.randint(1, 3)
        elif how == "time":
            c["signed_at"] = leaf.timestamp(datetime.fromisoformat(c["signed_at"].replace("Z", "+00:00")) - timedelta(seconds=1))
        elif how == "other_root":
            j = (i + 1) % len(cps)
            c["root_hash"], c["signature"] = cps[j]["root_hash"], cps[j]["signature"]
        else:
            cp = Checkpoint.from_json(c)
            c.update(forger.sign(cp.tree_size, cp.root_hash, cp.signed_at).as_json())
    rng.shuffle(events) if rng.random() < 0.2 else None  # line order is not meaning: must not matter
    return kind, [header, *events, *leaves, *cps], trusted


def test_clean_export_verifies(sealed):
    rt, records = sealed
    report = verify.verify_records(records, sealing.public_key(rt))
    assert report.tree_size == 400 and report.checkpoints == 8
    sealing.verify_database(rt)


def test_every_one_of_1200_random_tampers_is_detected(sealed):
    rt, records = sealed
    key = sealing.public_key(rt)
    forger = Signer(Ed25519PrivateKey.generate(), sealing.origin(rt))
    rng = random.Random(20261123)
    kinds: dict[str, int] = {}
    for n in range(1200):
        kind, tampered, trusted = _tamper(rng, records, forger)
        kinds[kind] = kinds.get(kind, 0) + 1
        with pytest.raises(verify.Discrepancy):
            verify.verify_records(tampered, key, trusted=trusted)
            pytest.fail(f"tamper {n} ({kind}) was not detected")
    assert len(kinds) == 12 and min(kinds.values()) >= 50, kinds


DB_TAMPERS = [
    "UPDATE audit_events SET outcome = 'denied' WHERE id = (SELECT event_id FROM audit_log_leaves WHERE position = 17)",
    "UPDATE audit_events SET break_glass = NOT break_glass WHERE id = (SELECT event_id FROM audit_log_leaves WHERE position = 399)",
    "UPDATE audit_events SET occurred_at = occurred_at - interval '1 second' WHERE id = (SELECT event_id FROM audit_log_leaves WHERE position = 0)",
    "UPDATE audit_events SET actor_username = 'someone' WHERE id = (SELECT event_id FROM audit_log_leaves WHERE position = 123)",
    "UPDATE audit_events SET purpose_of_use = NULL WHERE id = (SELECT event_id FROM audit_log_leaves WHERE position = 250)",
    "UPDATE audit_events SET request_id = 'x' WHERE id IN (SELECT event_id FROM audit_log_leaves WHERE position BETWEEN 300 AND 310)",
    "DELETE FROM audit_event_subjects WHERE event_id IN (SELECT event_id FROM audit_event_subjects LIMIT 1)",
    "INSERT INTO audit_event_subjects (event_id, patient_id) SELECT event_id, '00000000-0000-4000-8000-00000000abcd' FROM audit_log_leaves WHERE position = 42",
    "DELETE FROM audit_log_leaves WHERE position = 399",
    "DELETE FROM audit_log_leaves WHERE position >= 350",
    "DELETE FROM audit_checkpoints WHERE tree_size = 400",
    "UPDATE audit_checkpoints SET root_hash = signature WHERE tree_size = 200",
    "UPDATE audit_checkpoints SET signed_at = signed_at WHERE tree_size = 1000000; UPDATE audit_checkpoints SET key_id = 'x', signature = (SELECT signature FROM audit_checkpoints WHERE tree_size = 100) WHERE tree_size = 150",
    "UPDATE audit_log_leaves SET leaf_hash = (SELECT leaf_hash FROM audit_log_leaves WHERE position = 5) WHERE position = 6",
    "UPDATE audit_log_leaves SET position = -1 WHERE position = 8; UPDATE audit_log_leaves SET position = 8 WHERE position = 9; "
    "UPDATE audit_log_leaves SET position = 9 WHERE position = -1",
    "UPDATE audit_log_leaves SET position = position + 1000 WHERE position = 77",
    "INSERT INTO audit_events SELECT * FROM audit_events WHERE 1 = 0",  # placeholder replaced below
    "UPDATE audit_events SET detail = '{\"n\": 999}' WHERE id = (SELECT event_id FROM audit_log_leaves WHERE position = 64)",
    "UPDATE audit_events SET patient_district = 'PK-PB-RWP' WHERE id = (SELECT event_id FROM audit_log_leaves WHERE position = 333)",
    "UPDATE audit_checkpoints SET tree_size = tree_size + 1 WHERE tree_size = 400",
]


def _disable(conn, pg: bool) -> None:
    for t in TABLES:
        if pg:
            conn.execute(text(f"ALTER TABLE {t} DISABLE TRIGGER USER"))
        else:
            for ev in ("update", "delete"):
                conn.execute(text(f"DROP TRIGGER IF EXISTS nhr_{t}_no_{ev}"))
    if pg:
        conn.execute(text("SET CONSTRAINTS ALL DEFERRED"))
        conn.execute(text("ALTER TABLE audit_log_leaves DROP CONSTRAINT fk_audit_log_leaves_event_id_audit_events"))
        conn.execute(text("ALTER TABLE audit_event_subjects DROP CONSTRAINT fk_audit_event_subjects_event_id_audit_events"))
    else:
        conn.execute(text("PRAGMA defer_foreign_keys = ON"))


@pytest.mark.parametrize("n", range(len(DB_TAMPERS)))
def test_superuser_tampering_in_the_database_is_detected(sealed, n):
    """Triggers dropped or disabled inside a transaction (as a superuser could), the tamper made,
    verification run in that same transaction, then everything rolled back."""
    rt, _ = sealed
    pg = is_postgres(rt)
    sql = DB_TAMPERS[n]
    if n == 16:  # an inserted event copied from a sealed one under a new id, backdated
        new = str(uuid.uuid4()) if pg else uuid.uuid4().hex
        sql = (f"INSERT INTO audit_events SELECT '{new}', occurred_at, request_id, client_address, actor_user_id, actor_username, "
               "actor_role, actor_scope_level, actor_scope_code, actor_province, actor_district, action, resource_type, "
               "resource_id, patient_id, patient_province, patient_district, outcome, purpose_of_use, break_glass, "
               "break_glass_reason, outside_capture_scope, detail, mac FROM audit_events LIMIT 1")
    if not pg:
        sql = sql.replace("occurred_at - interval '1 second'", "strftime('%Y-%m-%d %H:%M:%f', occurred_at, '-1 second')")
        sql = sql.replace("'00000000-0000-4000-8000-00000000abcd'", "'000000000000400080000000000abcd0'")
        sql = sql.replace("NOT break_glass", "1 - break_glass")
    with rt.engine.connect() as conn:
        with conn.begin():
            _disable(conn, pg)
            for statement in sql.split("; "):
                conn.execute(text(statement))
            from sqlalchemy.orm import Session

            with Session(bind=conn) as s:
                with pytest.raises(verify.Discrepancy):
                    verify.verify_database(s, sealing.origin(rt), sealing.public_key(rt), isolate=False,
                                           grace=timedelta(0))
            conn.rollback()
    sealing.verify_database(rt)  # and the rollback left the log intact


def test_no_false_alarm_on_100k_events():
    """100,000 synthetic events, sealed in 10 checkpoints, exported and verified: intact."""
    n, signer = 100_000, Signer(Ed25519PrivateKey.generate(), "nhr/PK")
    t0 = time.perf_counter()
    base = datetime(2026, 1, 1, tzinfo=UTC)
    records = [{"format": verify.EXPORT_FORMAT, "leaf_encoding": leaf.VERSION, "origin": "nhr/PK", "tree_size": n}]
    leaves, cps, f = [], [], Frontier()
    for i in range(n):
        fields = [str(uuid.UUID(int=i)), leaf.timestamp(base + timedelta(microseconds=i * 7)), f"req-{i}", "10.0.0.1",
                  None, "clinic.lahore", "clinic_worker", "facility", "F-LAH-02", "PK-PB", "PK-PB-LAH", "patient.read",
                  "Patient", str(uuid.UUID(int=i + n)), str(uuid.UUID(int=i + n)), "PK-PB", "PK-PB-LAH", SUCCESS,
                  "TREAT", "false", None, "false", '{"n":%d}' % i]
        subjects = [str(uuid.UUID(int=i + n))] if i % 3 == 0 else []
        records.append({"kind": "event", "event": dict(zip(leaf.FIELDS, fields)), "subjects": subjects})
        h = leaf.text_leaf_hash(fields, subjects)
        f.append(h)
        leaves.append({"kind": "leaf", "position": i, "event_id": fields[0], "leaf_hash": h.hex()})
        if (i + 1) % 10_000 == 0:
            cps.append({"kind": "checkpoint", **signer.sign(f.size, f.root(), datetime.now(UTC)).as_json()})
    built = time.perf_counter() - t0
    t1 = time.perf_counter()
    report = verify.verify_records(records + leaves + cps, signer.public_key)
    took = time.perf_counter() - t1
    assert report.tree_size == n and report.checkpoints == 10
    print(f"\n100k events: built in {built:.2f}s, verified in {took:.2f}s ({n / took:,.0f} events/s)")
