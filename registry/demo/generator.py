"""Synthetic demo population: patients with Pakistani names and EPI doses with realistic delays
and dropouts. Every value is random; no real person is represented.

Rows are encrypted and indexed exactly as the service does (same codec), then written in
bulk. The loader is a system actor and is audited like any other: one `patient.create` event
per patient and one `immunization.create` event per patient's doses, by `system:demo-loader`.
"""

from __future__ import annotations

import json
import random
import uuid
from datetime import UTC, date, datetime, timedelta
from importlib import resources
from typing import Callable

from sqlalchemy import insert, select

from registry.facilities.models import Facility
from registry.immunizations.models import Immunization
from registry.patients import codec
from registry.patients.models import Patient, PatientIdentifierIndex
from registry.runtime import Runtime
from security.audit import event_mac
from security.audit.models import AuditEventRow

LOADER_ID = uuid.UUID("00000000-0000-5000-8000-00000000d3e0")
# (vaccine, dose, due age in days, probability of being given if the previous visit happened)
EPI = [
    ("BCG", 1, 0, 0.93), ("OPV", 0, 0, 0.9), ("HEPB", 1, 0, 0.6),
    ("OPV", 1, 42, 0.9), ("PENTA", 1, 42, 0.92), ("PCV", 1, 42, 0.9), ("ROTA", 1, 42, 0.88),
    ("OPV", 2, 70, 0.92), ("PENTA", 2, 70, 0.9), ("PCV", 2, 70, 0.9), ("ROTA", 2, 70, 0.88),
    ("OPV", 3, 98, 0.92), ("PENTA", 3, 98, 0.9), ("PCV", 3, 98, 0.9), ("IPV", 1, 98, 0.85),
    ("MR", 1, 270, 0.85), ("TCV", 1, 270, 0.8), ("MR", 2, 450, 0.8),
]
VISITS = [0, 42, 70, 98, 270, 450]


# How often a caregiver comes back for the next visit, by province: invented, but chosen so that
# valid Penta-3 ends near the range reported for Pakistan's provinces (about 70 to 85%).
RETURNS = {"PK-PB": 0.96, "PK-IS": 0.96, "PK-JK": 0.95, "PK-KP": 0.93, "PK-GB": 0.93, "PK-SD": 0.91, "PK-BA": 0.88}


def synthetic_doses(rng: random.Random, birth: date, today: date, returns: float = 0.93):
    """(dose id, vaccine, dose number, date given, lot) of one synthetic child: each visit attended
    with probability `returns` (a missed visit ends the series: dropout), each dose given with its
    own probability. A visit falls at the due age plus a delay (mean 2 days at birth, 10 later) and
    never sooner than four weeks after the previous visit, as a vaccinator books the next one;
    nothing after `today`. The order of draws from `rng` is fixed, so a seed always yields the same
    population."""
    attended, last = True, None
    for visit in VISITS:
        attended = attended and rng.random() < returns
        due = birth + timedelta(days=visit)
        if last is not None:
            due = max(due, last + timedelta(days=28))
        when = due + timedelta(days=int(rng.expovariate(1 / (2 if visit == 0 else 10))))
        if attended and when <= today:
            last = when
        for vaccine, dose, age, p in EPI:
            if age != visit:
                continue
            if not attended or when > today or rng.random() > p:
                continue
            dose_id = uuid.UUID(int=rng.getrandbits(128), version=4)
            yield dose_id, vaccine, dose, when, f"{vaccine[:2]}{when.year}-{rng.randrange(100, 999)}"


def district_facility_rows(session) -> list[dict]:
    """One invented EPI centre for every district that has no facility yet (the demo only: the
    shipped demo facilities cover a few districts, and a district without one shows an empty
    coverage row). Rows in the format of the facilities file (registry/reference_data.py)."""
    from registry.jurisdictions.models import Jurisdiction

    served = set(session.scalars(select(Facility.district).where(Facility.active.is_(True))))
    districts = session.scalars(select(Jurisdiction).where(Jurisdiction.level == "district").order_by(Jurisdiction.code))
    return [{"code": f"F-D-{d.code.removeprefix('PK-')}"[:32], "name": f"EPI Centre {d.name} (demo)", "kind": "epi_centre",
             "jurisdiction_code": d.code} for d in districts if d.code not in served]


def load_names() -> dict:
    return json.loads(resources.files("registry.demo").joinpath("data/names.json").read_text())


def _nadra(rng: random.Random) -> str:
    d = "".join(str(rng.randrange(10)) for _ in range(13))
    return f"{d[:5]}-{d[5:12]}-{d[12]}"


def generate(rt: Runtime, session, *, patients: int, seed: int = 1947, today: date | None = None,
             plaintexts: list[dict] | None = None, on_progress: Callable[[str, int, int], None] | None = None) -> tuple[int, int]:
    """Insert `patients` synthetic children across the demo facilities; returns (patients, doses).

    `plaintexts`, if given, receives each patient's clear values, so tests can prove that none
    of them reaches the database file. `on_progress(phase, done, total)` is told how far it got:
    phase "generating" counts patients encrypted, "writing" counts rows inserted."""
    report = on_progress or (lambda phase, done, total: None)
    from registry.identifiers import new_health_id

    rng = random.Random(seed)
    names = load_names()
    today = today or date.today()
    # the shipped demo facilities (where the demo logins work) first, then the per-district EPI
    # centres the demo adds (district_facility_rows), so that even a small demo fills the former
    facilities = sorted(session.scalars(select(Facility).order_by(Facility.code)), key=lambda f: f.code.startswith("F-D-"))
    now = datetime.now(UTC)
    p_rows, i_rows, d_rows, a_rows = [], [], [], []
    n_doses = 0
    for n in range(patients):
        f = facilities[n % len(facilities)]
        pid = uuid.UUID(int=rng.getrandbits(128), version=4)
        sex = rng.choice(["female", "male"])
        family = rng.choice(names["family"])
        birth = today - timedelta(days=rng.randrange(0, 3 * 365))
        mother = rng.choice(names["female_given"]) + " " + family
        plain = {
            "given_name": rng.choice(names["female_given" if sex == "female" else "male_given"]),
            "family_name": family, "guardian_name": mother, "guardian_cnic": _nadra(rng),
            "phone": f"+923{rng.randrange(0, 50):02d}{rng.randrange(10**7):07d}",
            "address": f"{rng.choice(names['streets'])}, {rng.choice(names['localities'])}",
            "health_id": new_health_id(), "bform": _nadra(rng) if rng.random() < 0.6 else None, "cnic": None,
        }
        if plaintexts is not None:
            plaintexts.append(dict(plain))
        created = now - timedelta(seconds=patients - n)
        p_rows.append({
            "id": pid, "version": 1, "custodian": f.province, "province": f.province, "district": f.district,
            "home_facility": f.code, "sex": sex, "birth_date": birth, "guardian_relationship": "mother",
            "created_at": created, "updated_at": created, "created_by": LOADER_ID,
            **codec.encrypt_fields(rt.cipher, f.province, pid, {c: plain.get(c) for c in codec.ENCRYPTED}),
        })
        i_rows += codec.index_rows(rt.indexer, f.province, pid, plain)
        given = 0
        for dose_id, vaccine, dose, when, lot in synthetic_doses(rng, birth, today, RETURNS.get(f.province, 0.93)):
            d_rows.append({
                "id": dose_id, "version": 1, "patient_id": pid,
                "custodian": f.province, "province": f.province, "district": f.district, "facility": f.code,
                "vaccine": vaccine, "dose_number": dose, "date_given": when, "lot_number": lot, "performer_id": LOADER_ID,
                "status": "completed", "status_reason_ct": None, "supersedes_id": None, "recorded_at": created,
            })
            given += 1
        n_doses += given
        a_rows.append(_event(now, "patient.create", pid, f, "Patient"))
        if given:
            a_rows.append(_event(now, "immunization.create", pid, f, "Immunization", {"count": given, "via": "demo"}))
        if (n + 1) % 100 == 0 or n + 1 == patients:
            report("generating", n + 1, patients)
    event_mac.sign_rows(session, a_rows)
    tables = ((Patient.__table__, p_rows), (PatientIdentifierIndex.__table__, i_rows),
              (Immunization.__table__, d_rows), (AuditEventRow.__table__, a_rows))
    total, written = sum(len(rows) for _, rows in tables), 0
    for table, rows in tables:
        for i in range(0, len(rows), 1000):
            session.execute(insert(table), rows[i:i + 1000])
            written += len(rows[i:i + 1000])
            report("writing", written, total)
    return patients, n_doses


def _event(now: datetime, action: str, pid: uuid.UUID, f: Facility, resource: str, detail: dict | None = None) -> dict:
    return {
        "id": uuid.uuid4(), "occurred_at": now, "request_id": "demo-load", "client_address": "cli",
        "actor_user_id": LOADER_ID, "actor_username": "system:demo-loader", "actor_role": "system",
        "actor_scope_level": "facility", "actor_scope_code": f.code, "actor_province": f.province, "actor_district": f.district,
        "action": action, "resource_type": resource, "resource_id": str(pid), "patient_id": pid,
        "patient_province": f.province, "patient_district": f.district, "outcome": "success", "purpose_of_use": "HSYSADMIN",
        "break_glass": False, "break_glass_reason": None, "outside_capture_scope": False, "detail": detail or {"via": "demo"},
    }
