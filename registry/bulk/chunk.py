"""One chunk of an import, inside the caller's transaction: validate every row, check ids and
identifiers against the registry, encrypt and blind-index, write in bulk, and audit.

Invariants:
- Rows are encrypted and indexed with the same codec as `POST /patients` (registry/patients/codec.py),
  so an imported record is indistinguishable from a registered one.
- Every imported record is accountable: each chunk writes one `patient.import` and/or one
  `immunization.import` audit event, by the importing user, with every patient it touched as a
  subject (`audit_event_subjects`), so "who touched this child" finds imports too.
- A rejected row is reported as (row, field, reason code) only; no value leaves the row.
"""

from __future__ import annotations

import uuid
from collections import namedtuple
from dataclasses import dataclass, field
from datetime import UTC, datetime

from sqlalchemy import insert, select
from sqlalchemy.orm import Session

from registry import identifiers
from registry.clock import local_today
from registry.bulk import identity
from registry.bulk.sources import Item, Parsed, RowInvalid
from registry.bulk.writer import insert_rows, rows_by_ids
from registry.errors import InvalidInput
from registry.immunizations import intake, validation
from registry.immunizations import repository as dose_repo
from registry.immunizations.models import Immunization
from registry.linkage import records as linkage_records
from registry.linkage import repository as linkage_repo
from registry.linkage import service as linkage
from registry.linkage import within_batch
from registry.patients import codec
from registry.patients.models import Patient, PatientIdentifierIndex
from registry.patients.repository import Access, access_to, lock_for_doses
from registry.reports.models import DirtyPatient
from registry.patients.service import plaintext_columns
from security.audit import event_mac
from security.audit import trail as audit
from security.audit.models import AuditEventRow, AuditEventSubjectRow
from security.audit.trail import AuditTrail

P, IX, D = Patient.__table__, PatientIdentifierIndex.__table__, Immunization.__table__
_PatientRow = namedtuple("_PatientRow", ("id", "custodian", "province", "district", "home_facility", "birth_date", "sex",
                                         "merged_into"))
_DoseRow = namedtuple("_DoseRow", ("patient_id", "id", "vaccine", "dose_number", "date_given", "status", "dose_number_inferred"))
# a refused dose's rule (registry/immunizations/validation.py) -> the import report's reason code
_REASONS = {"dose_number_out_of_range": "out_of_range", "duplicate": "duplicate_dose"}
_OWN = {"bform": identifiers.BFORM_SYSTEM, "cnic": identifiers.CNIC_SYSTEM}


@dataclass
class Actor:
    """Who imports, for which facility: every record and event is attributed to them."""

    trail: AuditTrail
    facility: str
    province: str   # the facility's province: the custodian of the patients it registers
    district: str
    run_id: uuid.UUID

    @property
    def principal(self):
        return self.trail.context.principal


@dataclass
class ChunkResult:
    imported: int = 0
    errors: dict[tuple[int, str], str] = field(default_factory=dict)  # (row, field) -> reason

    def reject(self, row: int, fld: str, reason: str) -> None:
        self.errors.setdefault((row, fld[:64]), reason)


def process(session: Session, rt, actor: Actor, items: list[Item], chunk_no: int) -> ChunkResult:
    result = ChunkResult()
    patients, doses = [], []
    for it in items:
        try:
            parsed = it.parse()
        except RowInvalid as exc:
            for fld, reason in exc.errors:
                result.reject(it.row, fld, reason)
            continue
        (patients if parsed.kind == "patient" else doses).append((it.row, parsed))
    now = datetime.now(UTC)
    if patients:
        _patients(session, rt, actor, patients, result, now, chunk_no)
    if doses:
        _doses(session, rt, actor, doses, result, now, chunk_no)
    return result


def _existing(session: Session, table, ids: list[uuid.UUID]) -> set[uuid.UUID]:
    return {r[0] for r in rows_by_ids(session, table, ("id",), "id", ids)}


def _unique_ids(rows: list[tuple[int, Parsed]], exists: set[uuid.UUID], result: ChunkResult) -> list[tuple[int, Parsed]]:
    seen, keep = set(), []
    for row, p in rows:
        if p.id in exists or p.id in seen:
            result.reject(row, "id", "already_exists" if p.id in exists else "duplicate_in_file")
            continue
        seen.add(p.id)
        keep.append((row, p))
    return keep


def _event(session: Session, actor: Actor, action: str, resource: str, subjects: set, detail: dict, outside: bool = False) -> None:
    event = actor.trail.build(action, audit.SUCCESS, resource_type=resource, outside_capture_scope=outside, detail=detail)
    insert_rows(session, AuditEventRow.__table__, event_mac.sign_rows(session, [event], {event["id"]: subjects}))
    insert_rows(session, AuditEventSubjectRow.__table__, [{"event_id": event["id"], "patient_id": s} for s in subjects])


def _mark_for_reports(session: Session, patient_ids) -> None:
    """Queue the touched children for the coverage aggregates, in the chunk's transaction (as
    the API's write paths do), so a report never misses an imported record."""
    if patient_ids:
        session.execute(insert(DirtyPatient.__table__), [{"patient_id": pid} for pid in sorted(patient_ids)])


def _patients(session, rt, actor: Actor, rows, result: ChunkResult, now, chunk_no: int) -> None:
    rows = _unique_ids(rows, _existing(session, P, [p.id for _, p in rows]), result)
    accepted, wanted = [], {c: set() for c in _OWN}
    for row, p in rows:
        data = p.data
        node = rt.jurisdictions.get(data.district or actor.district, session)
        if node is None or node.level != "district":
            result.reject(row, "district", "unknown_district")
            continue
        if not node.active:
            result.reject(row, "district", "retired_district")
            continue
        plain = plaintext_columns(data.model_dump())
        norms, dup = {}, False
        for col, system in _OWN.items():
            if plain.get(col):
                norms[col] = identifiers.normalise(system, plain[col])
                if norms[col] in wanted[col]:
                    result.reject(row, col, "duplicate_in_file")
                    dup = True
        if dup:
            continue
        for col, value in norms.items():
            wanted[col].add(value)
        accepted.append((row, p, node, plain, norms))
    taken = {col: identity.taken(session, rt, system, wanted[col], (col,)) for col, system in _OWN.items()}
    keep = []
    for item in accepted:
        clash = [col for col, value in item[4].items() if value in taken[col]]
        for col in clash:
            result.reject(item[0], col, "duplicate_identifier")
        if not clash:
            keep.append(item)
    keep, found, in_file = _likely_duplicates(session, rt, actor, keep, result)
    health_ids = identity.new_health_ids(session, rt, len(keep))
    p_rows, i_rows, custodian, user = [], [], actor.province, actor.principal.user_id
    for (row, p, node, plain, _), hid in zip(keep, health_ids):
        plain["health_id"] = hid
        data = p.data
        p_rows.append({
            "id": p.id, "version": 1, "custodian": custodian, "province": node.province, "district": node.code,
            "home_facility": actor.facility, "sex": data.sex, "birth_date": data.birth_date,
            "guardian_relationship": data.guardian.relationship if data.guardian else None,
            "created_at": now, "updated_at": now, "created_by": user, "unnamed": data.unnamed, "birth_facility": None, "merged_into": None,
            **codec.encrypt_fields(rt.cipher, custodian, p.id, {c: plain.get(c) for c in codec.ENCRYPTED}),
        })
        i_rows += codec.index_rows(rt.indexer, custodian, p.id, plain)
    insert_rows(session, P, p_rows)
    insert_rows(session, IX, i_rows)
    if found is not None:
        link_keys = []
        for (row, p, node, plain, _), (rec, cands) in zip(keep, found):
            link_keys += linkage_records.key_rows(rt.indexer, custodian, p.id, rec)
            linkage.propose_found(session, p.id, cands)
        linkage_repo.insert_keys(session, link_keys)
        version = linkage.active_model(session).version
        for a, b, sc in in_file:  # two rows of the file that may be one child: both are in, the stewards decide
            linkage_repo.propose(session, a, b, weight=sc.weight, probability=sc.probability, grade=sc.grade,
                                 levels=sc.levels, model_version=version, source="registration")
    _mark_for_reports(session, {r["id"] for r in p_rows})
    if p_rows:
        _event(session, actor, "patient.import", "Patient", {r["id"] for r in p_rows},
               {"run": str(actor.run_id), "chunk": chunk_no, "count": len(p_rows), "via": "nhr import"})
    result.imported += len(p_rows)


def _likely_duplicates(session, rt, actor: Actor, items: list, result: ChunkResult):
    """The probabilistic duplicate check of registration (registry/linkage), row by row against
    the registry: a likely duplicate (certain/probable) is rejected as `likely_duplicate` unless
    the row confirms (`confirm_not_duplicate`); possible matches are queued once imported.
    Then the rows with each other (`_likely_in_file`). Returns the rows kept, per row (prepared
    record, candidates) or None when the check is off, and the in-file pairs to propose."""
    if not rt.settings.linkage_check:
        return items, None, []
    keep, found = [], []
    for item in items:
        row, p, node, plain, _ = item
        data = p.data
        rec = linkage_records.from_input(
            given_name=data.given_name, family_name=data.family_name, guardian_name=plain.get("guardian_name"),
            guardian_cnic=plain.get("guardian_cnic"), bform=plain.get("bform"), phone=plain.get("phone"),
            birth_date=data.birth_date, sex=data.sex, facility=actor.facility, district=node.code, province=node.province)
        cands = linkage.find(session, rt, actor.principal, rec)
        likely = [c.row.id for c in cands if c.scored.grade in linkage.LIKELY]
        if not data.confirm_not_duplicate and likely:
            in_file = bool(_imported_by_run(session, actor, likely))
            result.reject(row, "confirm_not_duplicate", "likely_duplicate_in_file" if in_file else "likely_duplicate")
            continue
        keep.append(item)
        found.append((rec, cands))
    return _likely_in_file(session, keep, found, result)


def _imported_by_run(session, actor: Actor, patient_ids: list[uuid.UUID]) -> set[uuid.UUID]:
    """Which of `patient_ids` this import run created, in an earlier chunk of the file (also one
    committed before an interruption and resume): the subjects of the run's `patient.import`
    events (the run's request id). Asked only for a row's likely duplicates, so rarely."""
    ev, sub = AuditEventRow.__table__, AuditEventSubjectRow.__table__
    q = (select(sub.c.patient_id).join(ev, ev.c.id == sub.c.event_id)
         .where(sub.c.patient_id.in_(patient_ids), ev.c.action == "patient.import",
                ev.c.request_id == actor.trail.context.request_id))
    return set(session.scalars(q))


def _likely_in_file(session, keep: list, found: list, result: ChunkResult):
    """The chunk's rows with each other (registry/linkage/within_batch.py): a row that is likely
    the same child as an earlier row of the chunk is rejected as `likely_duplicate_in_file`
    unless it confirms; returns the rows kept, their (record, candidates) and the in-file pairs
    to propose once both are written, as (earlier row's id, row's id, scored)."""
    checked = within_batch.check(linkage.active_model(session), [rec for rec, _ in found],
                                 [bool(item[1].data.confirm_not_duplicate) for item in keep])
    for i, _ in checked.likely.items():
        result.reject(keep[i][0], "confirm_not_duplicate", "likely_duplicate_in_file")
    pairs = [(keep[j][1].id, keep[i][1].id, s) for i, matches in checked.propose.items() for j, s in matches]
    kept = [n for n in range(len(keep)) if n not in checked.likely]
    return [keep[n] for n in kept], [found[n] for n in kept], pairs


def _doses(session, rt, actor: Actor, rows, result: ChunkResult, now, chunk_no: int) -> None:
    rows = _unique_ids(rows, _existing(session, D, [p.id for _, p in rows]), result)
    pids = sorted({p.patient_id for _, p in rows})
    lock_for_doses(session, pids)  # a concurrent merge: committed before (merged_into is read) or waits (issue 13)
    patients = {r[0]: _PatientRow(*r) for r in rows_by_ids(session, P, _PatientRow._fields, "id", pids)}
    given: dict[uuid.UUID, list] = {}
    for r in rows_by_ids(session, D, _DoseRow._fields, "patient_id", pids, {"status": "completed"}):
        given.setdefault(r[0], []).append(_DoseRow(*r))
    d_rows, subjects, outside, principal, today = [], set(), False, actor.principal, local_today()
    schedules: dict = {}
    accepted = 0  # records of the file (a combination product's component rows are not rows of the file)

    def schedule_of(custodian: str):
        if custodian not in schedules:
            schedules[custodian] = rt.schedules.in_force(session, custodian, today)[1]
        return schedules[custodian]

    for row, p in rows:
        prow = patients.get(p.patient_id)
        reach = access_to(principal, prow) if prow is not None else Access.NONE
        if reach is Access.NONE:  # unknown or out of reach: the same answer, so existence does not leak
            result.reject(row, "patient_id", "unknown_patient")
            continue
        if prow.merged_into is not None:  # as the API's 409 `merged`: the dose belongs on the surviving record
            result.reject(row, "patient_id", "merged_patient")
            continue
        mine = given.setdefault(prow.id, [])
        try:  # history: impossible facts and duplicates of doses administered here are refused, schedule rules are not
            built = intake.build(rt.cipher, prow, p.data, p.id, existing=lambda: mine,
                                 schedule=lambda: schedule_of(prow.custodian), today=today, now=now,
                                 facility=actor.facility, user_id=principal.user_id, refuse_schedule=False)
        except InvalidInput as exc:
            code = getattr(exc, "code", None)
            result.reject(row, exc.field or "row", _REASONS.get(code, code or "invalid"))
            continue
        mine += [_DoseRow(prow.id, r["id"], r["vaccine"], r["dose_number"], r["date_given"], r["status"],
                          r["dose_number_inferred"]) for r in built.rows]
        outside |= reach is not Access.CAPTURE
        subjects.add(prow.id)
        d_rows += built.rows
        accepted += 1
    # inferred dose numbers, in the order of each touched child's series (a file need not be in date order)
    new = {r["id"]: r for r in d_rows}
    for pid in subjects:
        prow = patients[pid]
        numbers = validation.inferred_numbers(schedule_of(prow.custodian), prow, given[pid], today)
        for dose_id, number in numbers.items():
            if dose_id in new:
                new[dose_id]["dose_number"] = number
        dose_repo.set_inferred_numbers(session, {k: v for k, v in numbers.items() if k not in new})
    insert_rows(session, D, d_rows)
    _mark_for_reports(session, subjects)
    if d_rows:
        _event(session, actor, "immunization.import", "Immunization", subjects,
               {"run": str(actor.run_id), "chunk": chunk_no, "count": accepted, "via": "nhr import"}, outside)
    result.imported += accepted


__all__ = ["Actor", "ChunkResult", "process"]
