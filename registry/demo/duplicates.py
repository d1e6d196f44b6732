"""Duplicate pairs for the demo's data steward (`nhr demo --duplicates N`, default 6).

A handful of demo children in Punjab (the demo steward `steward.punjab`'s province) are registered
a second time, at another facility of the same district, the way a second register writes them:
a romanisation variant of the name (Muhammad/Mohammad, Ayesha/Aisha), the birth date's day and
month swapped, the guardian's name written as the family name, a one-letter typo, a missing B-form
and guardian CNIC, a new phone number. The second record gets a dose of its own (the visit that
was recorded there), so the steward sees doses on both sides. Each pair is scored by the matching
engine (the active model) and queued as `dedupe` would queue it, so the reasons are the engine's.
Every value is invented; nothing of a real person.

Rows are written as the demo generator writes them (same codec, blind indexes, blocking keys and
audit events by `system:demo-loader`).
"""

from __future__ import annotations

import random
import uuid
from datetime import UTC, date, datetime, timedelta

from sqlalchemy import insert, select

from registry.demo.generator import EPI, LOADER_ID, _event
from registry.demo.linkage_population import _typo, _variant, _variants
from registry.facilities.models import Facility
from registry.identifiers import new_health_id
from registry.immunizations.models import Immunization
from registry.linkage import records
from registry.linkage import repository as linkage_repo
from registry.linkage.match_models import LinkKey
from registry.linkage.scoring import score
from registry.linkage.service import active_model
from registry.patients import codec
from registry.patients.models import Patient, PatientIdentifierIndex
from security.audit import event_mac
from security.audit.models import AuditEventRow

# one corruption recipe per pair, cycled: what a second register typically gets wrong
RECIPES = (("variant", "no_bform"), ("swap", "phone"), ("guardian_family", "no_cnic"), ("typo", "swap", "phone", "no_cnic"),
           ("variant", "swap"), ("guardian_variant", "phone", "no_bform"))


def fits(recipe: tuple[str, ...], plain: dict, birth: date, variants: dict) -> bool:
    """Whether a child shows the recipe's corruption (a name with known spellings, a swappable date)."""
    if "swap" in recipe and not (birth.day <= 12 and birth.day != birth.month):
        return False
    if "variant" in recipe and not all(w.lower() in variants for w in (plain["given_name"] or "-").split()):
        return False
    if "guardian_variant" in recipe and not any(w.lower() in variants for w in (plain["guardian_name"] or "-").split()):
        return False
    return True


def corrupt(rng: random.Random, plain: dict, birth: date, recipe: tuple[str, ...], variants: dict) -> tuple[dict, date]:
    """A second registration of the same child: `plain` (decrypted fields) and birth date changed by
    `recipe`. Health ID and B-form are never copied (a B-form would be caught by the exact check)."""
    out = {**plain, "health_id": new_health_id(), "bform": None, "cnic": None}
    for kind in recipe:
        if kind == "variant":
            varied = _variant(rng, out["given_name"], variants)
            out["given_name"] = varied if varied != out["given_name"] else _typo(rng, out["given_name"]).capitalize()
        elif kind == "typo":
            out["given_name"] = _typo(rng, out["given_name"]).capitalize()
        elif kind == "swap":
            if birth.day <= 12 and birth.day != birth.month:
                birth = date(birth.year, birth.day, birth.month)
            else:  # a day off, as the register's handwriting goes
                birth = birth + timedelta(days=1)
        elif kind == "guardian_family":
            out["family_name"] = out["guardian_name"]
        elif kind == "guardian_variant":
            out["guardian_name"] = _variant(rng, out["guardian_name"], variants)
        elif kind == "no_cnic":
            out["guardian_cnic"] = None
        elif kind == "phone":
            out["phone"] = f"+923{rng.randrange(0, 50):02d}{rng.randrange(10**7):07d}"
    return out, birth


def _originals(session, province: str, count: int) -> list:
    """Demo children of the province at the shipped demo facilities (not the invented district
    centres), at least ten weeks old, not merged; a stable choice."""
    t = Patient.__table__
    q = (select(t).where(t.c.province == province, t.c.merged_into.is_(None), t.c.created_by == LOADER_ID,
                         ~t.c.home_facility.like("F-D-%"), t.c.birth_date <= date.today() - timedelta(days=70))
         .order_by(t.c.home_facility, t.c.id).limit(count * 50))
    rows = session.execute(q).all()
    by_facility: dict[str, list] = {}
    for r in rows:
        by_facility.setdefault(r.home_facility, []).append(r)
    picked, queues = [], list(by_facility.values())
    while any(queues):  # spread over the facilities
        for qu in queues:
            if qu:
                picked.append(qu.pop(0))
    return picked


def _second_dose(session, original_id: uuid.UUID, birth: date, today: date) -> tuple[str, int, date] | None:
    """A dose the original lacks and is old enough for: the visit recorded at the second facility."""
    t = Immunization.__table__
    have = {(v, n) for v, n in session.execute(select(t.c.vaccine, t.c.dose_number).where(t.c.patient_id == original_id))}
    for vaccine, number, age, _p in EPI:
        when = birth + timedelta(days=age + 5)
        if (vaccine, number) not in have and when <= today:
            return vaccine, number, when
    return None


def add(rt, session, *, count: int = 6, province: str = "PK-PB", seed: int = 1971, today: date | None = None) -> int:
    """Register `count` second records and queue each pair; returns how many pairs were queued."""
    if count <= 0:
        return 0
    rng, variants, today = random.Random(seed), _variants(), today or date.today()
    facilities = {}
    for f in session.scalars(select(Facility).where(Facility.province == province, Facility.active.is_(True))):
        facilities.setdefault(f.district, []).append(f)
    model, now = active_model(session), datetime.now(UTC)
    p_rows, i_rows, k_rows, d_rows, a_rows, pairs = [], [], [], [], [], []
    pool = [(row, {c: codec.decrypt_column(rt.cipher, row, c) for c in codec.ENCRYPTED})
            for row in _originals(session, province, count)]
    for n in range(min(count, len(pool))):
        recipe = RECIPES[n % len(RECIPES)]
        orig, plain = next(((r, p) for r, p in pool if fits(recipe, p, r.birth_date, variants)), pool[0])
        pool.remove((orig, plain))
        dup, birth = corrupt(rng, plain, orig.birth_date, recipe, variants)
        others = [f for f in facilities.get(orig.district, []) if f.code != orig.home_facility] or facilities[orig.district]
        f = others[n % len(others)]
        pid = uuid.UUID(int=rng.getrandbits(128), version=4)
        p_rows.append({"id": pid, "version": 1, "custodian": f.province, "province": f.province, "district": f.district,
                       "home_facility": f.code, "sex": orig.sex, "birth_date": birth, "guardian_relationship": "mother",
                       "created_at": now, "updated_at": now, "created_by": LOADER_ID,
                       **codec.encrypt_fields(rt.cipher, f.province, pid, {c: dup.get(c) for c in codec.ENCRYPTED})})
        i_rows += codec.index_rows(rt.indexer, f.province, pid, dup)
        rec = records.from_input(given_name=dup["given_name"], family_name=dup["family_name"],
                                 guardian_name=dup["guardian_name"], guardian_cnic=dup["guardian_cnic"], bform=None,
                                 phone=dup["phone"], birth_date=birth, sex=orig.sex, facility=f.code, district=f.district,
                                 province=f.province)
        k_rows += records.key_rows(rt.indexer, f.province, pid, rec)
        a_rows.append(_event(now, "patient.create", pid, f, "Patient", {"via": "demo", "duplicate_for_steward": True}))
        second = _second_dose(session, orig.id, birth, today)
        if second:
            vaccine, number, when = second
            d_rows.append({"id": uuid.UUID(int=rng.getrandbits(128), version=4), "version": 1, "patient_id": pid,
                           "custodian": f.province, "province": f.province, "district": f.district, "facility": f.code,
                           "vaccine": vaccine, "dose_number": number, "date_given": when,
                           "lot_number": f"{vaccine[:2]}{when.year}-{rng.randrange(100, 999)}", "performer_id": LOADER_ID,
                           "status": "completed", "status_reason_ct": None, "supersedes_id": None, "recorded_at": now})
            a_rows.append(_event(now, "immunization.create", pid, f, "Immunization", {"count": 1, "via": "demo"}))
        pairs.append((orig, pid, rec))
    event_mac.sign_rows(session, a_rows)
    for table, rows in ((Patient.__table__, p_rows), (PatientIdentifierIndex.__table__, i_rows),
                        (LinkKey.__table__, k_rows), (Immunization.__table__, d_rows), (AuditEventRow.__table__, a_rows)):
        if rows:
            session.execute(insert(table), rows)
    queued = 0
    for orig, pid, rec in pairs:
        scored = score(model, records.from_row(rt.cipher, orig), rec)
        if scored.grade is None:
            continue
        linkage_repo.propose(session, orig.id, pid, weight=scored.weight, probability=scored.probability,
                             grade=scored.grade, levels=scored.levels, model_version=model.version, source="dedupe", now=now)
        queued += 1
    return queued
