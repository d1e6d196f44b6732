"""Patient use cases. Each writes exactly one audit event, whatever the outcome.

Scope rules (see security/access/principal.py):
- read, list, update: capture scope; an emergency read outside it needs break-glass.
- search by exact identifier: search scope (national for clinic workers).
- A patient outside the caller's reach is reported as not found (404), never as forbidden,
  and the refusal is audited as `denied` so auditors see the attempt.
"""

from __future__ import annotations

import uuid
from types import SimpleNamespace
from datetime import UTC, datetime

from anyio import to_thread

from registry import identifiers
from registry.async_database import Compiled
from registry.audit_log import async_events
from registry.citizens import code_pool
from registry.citizens import codes as access_codes
from registry.citizens import repository as access_code_repo
from registry.context import ServiceContext
from registry.errors import Conflict, Forbidden, InvalidInput, NotFound, PreconditionFailed, PreconditionRequired
from registry.pagination import Page
from registry.linkage import records as linkage_records
from registry.linkage import service as linkage
from registry.reports import queue as report_queue
from registry.patients import audited_read, codec, newborns
from registry.patients import repository as repo
from registry.patients.repository import Access
from registry.patients.uniqueness import LABEL as _LABEL  # noqa: F401 (async_register reads svc._LABEL)
from registry.patients.uniqueness import check_unique as _check_unique
from registry.patients.uniqueness import confirm as _confirm
from registry.patients.uniqueness import confirmed as _confirmed
from registry.patients.uniqueness import new_health_id as _new_health_id
from registry.patients.reach import NOT_FOUND, Merged, reach  # noqa: F401 - Merged: raised for callers here
from registry.patients.schemas import PatientCreate, PatientMatch, PatientRegistered, PatientUpdate, PatientView
from security.access.permissions import Permission
from security.audit import trail as audit
from security.audit.trail import PatientRef

_LINKED = {"given_name", "family_name", "guardian", "phone", "birth_date"}


def _ref(row) -> PatientRef:
    return PatientRef(row.id, row.province, row.district)


def parse_if_match(value: str | None) -> int:
    if value is None:
        raise PreconditionRequired("this update needs an If-Match header with the record's ETag", field="If-Match")
    tag = value.strip().removeprefix("W/").strip('"')
    if not tag.isdigit():
        raise PreconditionFailed("If-Match is not an ETag of this record", field="If-Match")
    return int(tag)


def etag(version: int) -> str:
    return f'"{version}"'


def reachable(ctx: ServiceContext, patient_id: uuid.UUID, action: str, *, allow: tuple[Access, ...],
              break_glass: bool = False, follow_merged: bool = False, for_dose: bool = False):
    """Fetch a patient the caller may reach, or audit the refusal and raise NotFound.

    `break_glass=True` marks a read-only use case: there, an emergency request (the permission
    plus a stated reason) reaches any patient. Writes never pass `break_glass=True`.
    A record merged into another (issue 13) is refused (409 `merged`, naming the survivor),
    unless `follow_merged`: then the survivor is what is reached.
    `for_dose`: a dose will be written for it, so the row is read `FOR KEY SHARE`
    (repository.lock_for_doses): a concurrent merge cannot leave the dose on the merged record.
    Returns (row, outside_capture_scope)."""
    row, access = repo.get(ctx.session, ctx.principal, patient_id, key_share=for_dose)
    if follow_merged and row is not None and row.merged_into is not None:
        row = repo.survivor_of(ctx.session, row)
        access = repo.access_to(ctx.principal, row)
    return reach(ctx, row, access, patient_id, action, allow=allow, break_glass=break_glass,
                 record=lambda *a, **k: ctx.trail.record(ctx.session, *a, **k))




def new_row(cipher, p, data: PatientCreate, patient_id: uuid.UUID, custodian: str, province: str, district: str,
            plain: dict, now: datetime) -> dict:
    """A new patient's row, its fields encrypted (the sync and the event-loop registration)."""
    return {
        "id": patient_id, "version": 1, "custodian": custodian, "province": province, "district": district,
        "home_facility": p.facility, "sex": data.sex, "birth_date": data.birth_date,
        "unnamed": data.unnamed, "birth_facility": data.birth_facility,
        "guardian_relationship": data.guardian.relationship if data.guardian else None,
        "created_at": now, "updated_at": now, "created_by": p.user_id,
        **codec.encrypt_fields(cipher, custodian, patient_id, {c: plain.get(c) for c in codec.ENCRYPTED}),
    }


def plaintext_columns(data: dict) -> dict:
    """Input fields -> the plaintext of each encrypted column (guardian split into three)."""
    plain = {k: data[k] for k in ("given_name", "family_name", "phone", "address", "bform", "cnic") if k in data}
    if "guardian" in data:
        g = data["guardian"] or {}
        plain["guardian_name"] = g.get("name")
        plain["guardian_cnic"] = g.get("cnic")
    return plain


def _residence(ctx: ServiceContext, district: str | None) -> tuple[str, str]:
    node = ctx.runtime.jurisdictions.get(district, ctx.session) if district else None
    return residence_of(ctx, node)


def residence_of(ctx: ServiceContext, node) -> tuple[str, str]:
    """(province, district) of a registration or a move into `node`, or InvalidInput (`district`)."""
    if node is None or node.level != "district":
        raise InvalidInput("must be the code of a district, e.g. PK-PB-LAH", field="district")
    if not node.active:
        raise InvalidInput("this district is retired; no new registrations or moves into it", field="district")
    held = ctx.runtime.settings.node.province  # a provincial node holds its own province's patients only
    if held is not None and (node.province != held or ctx.principal.scope.province not in (None, held)):
        raise InvalidInput(f"this node holds {held}'s patients only; use that province's node", field="district")
    return node.province, node.code


def _duplicate_check(ctx: ServiceContext, data: PatientCreate, plain: dict, action: str, province: str, district: str,
                     new: tuple[str, uuid.UUID]):
    """Probabilistic duplicate check (registry/linkage): raises LikelyDuplicate (409, audited)
    for a certain or probable match the caller has not confirmed; returns the prepared record,
    the candidates to queue for review once the record exists, and the new record's health ID.
    Writes the blocking keys of `new` (custodian, id), the record this registration inserts, and
    probes the health ID's uniqueness, with its lookup (one round trip on PostgreSQL)."""
    if not ctx.runtime.settings.linkage_check:
        return None, [], _new_health_id(ctx)
    rec = linkage_records.from_input(
        given_name=data.given_name, family_name=data.family_name, guardian_name=plain.get("guardian_name"),
        guardian_cnic=plain.get("guardian_cnic"), bform=plain.get("bform"), phone=plain.get("phone"),
        birth_date=data.birth_date, sex=data.sex, facility=ctx.principal.facility, district=district, province=province)
    hid = identifiers.new_health_id()
    system, norm = identifiers.HEALTH_ID_SYSTEM, identifiers.normalise(identifiers.HEALTH_ID_SYSTEM, hid)
    by_custodian = ctx.runtime.indexer.for_all_custodians(system, norm)
    found, held = linkage.check_registration_probing(ctx, rec, action=action, confirmed=data.confirm_not_duplicate,
                                                     store=new, probe=(system, by_custodian))
    if _confirm(ctx, held, system, norm):  # taken (one in 1e11): draw again, one probe each
        hid = _new_health_id(ctx)
    return rec, found, hid


def register(ctx: ServiceContext, data: PatientCreate) -> PatientRegistered:
    """The response carries the patient's access code (citizen view), shown this once only."""
    p = ctx.principal
    action = "patient.create"
    if p.facility is None:
        ctx.trail.record(ctx.session, action, audit.DENIED, detail={"reason": "not bound to a facility"})
        raise Forbidden("only staff bound to a facility can register patients")
    # Without a pooled code, argon2id before the first statement: on SQLite that statement takes the write lock.
    pooled = ctx.runtime.settings.citizen.code_pool_size > 0 and code_pool.worth_taking(ctx.session)
    if not pooled:
        access_code, code_hash = access_codes.issue(ctx.runtime.code_hasher)
    try:
        province, district = _residence(ctx, data.district or p.scope.district)
    except InvalidInput:
        ctx.trail.record(ctx.session, action, audit.INVALID, detail={"field": "district"})
        raise
    custodian = p.scope.province
    patient_id = data.id or uuid.uuid4()
    raw = data.model_dump()
    refused = newborns.registration_refusal(raw, ctx.session)
    if refused is not None:
        ctx.trail.record(ctx.session, action, audit.INVALID, detail={"field": refused.field})
        raise refused
    plain = plaintext_columns(raw)
    _check_unique(ctx, plain, action)
    if data.id is not None and repo.get(ctx.session, p, patient_id)[0] is not None:
        ctx.trail.record(ctx.session, action, audit.CONFLICT, resource_id=patient_id, detail={"reason": "id exists"})
        raise Conflict("a patient with this id already exists", field="id")
    rec, found, plain["health_id"] = _duplicate_check(ctx, data, plain, action, province, district, (custodian, patient_id))
    now = datetime.now(UTC)
    row = new_row(ctx.runtime.cipher, p, data, patient_id, custodian, province, district, plain, now)
    repo.insert_patient(ctx.session, row, codec.index_rows(ctx.runtime.indexer, custodian, patient_id, plain))
    if pooled:  # a ready code, taken in this transaction (registry/citizens/code_pool.py); else hashed now
        access_code, code_hash = code_pool.issue(ctx.session, ctx.runtime.keyring, ctx.runtime.code_hasher)
    access_code_repo.insert_code(ctx.session, patient_id, code_hash, now, p.user_id)
    report_queue.mark(ctx.session, patient_id)  # coverage aggregates: refreshed before the next report
    detail = {"access_code_issued": True, **({"unnamed": True} if data.unnamed else {})}
    if rec is not None:  # its blocking keys were written by the check
        if found:
            linkage.propose_for(ctx, patient_id, found)
            detail["link_candidates"] = len(found)
            if data.confirm_not_duplicate and any(c.scored.grade in linkage.LIKELY for c in found):
                detail["confirmed_not_duplicate"] = True
    ctx.trail.record(ctx.session, action, audit.SUCCESS, resource_id=patient_id,
                     patient=PatientRef(patient_id, province, district), detail=detail)
    view = codec.to_view(ctx.runtime.cipher, SimpleNamespace(**row))
    return PatientRegistered.model_construct(**view.__dict__, access_code=access_code)


def read(ctx: ServiceContext, patient_id: uuid.UUID) -> PatientView:
    """The hot path: the read and its audit event are one statement on PostgreSQL."""
    event = ctx.trail.build("patient.read", audit.SUCCESS, resource_id=patient_id)
    allowed = ctx.access.break_glass and ctx.principal.can(Permission.PATIENT_BREAK_GLASS)
    row, written = audited_read.read_with_event(ctx.session, ctx.principal, patient_id, event, break_glass_allowed=allowed)
    return _read_view(ctx, row, written)


async def read_async(ctx: ServiceContext, patient_id: uuid.UUID) -> PatientView:
    """`read` on the event loop (PostgreSQL), two autocommit statements: the decision (patient
    and outcome, in SQL), then, once the record has decrypted, its audit event, committed before
    the caller answers. A refusal is handed to the unit of work, which writes it once after its
    rollback, as for every other refusal. Without a pool (SQLite), `read` in a worker thread."""
    db = ctx.aio
    if db is None:
        return await to_thread.run_sync(read, ctx, patient_id)
    event = ctx.trail.build("patient.read", audit.SUCCESS, resource_id=patient_id)
    allowed = ctx.access.break_glass and ctx.principal.can(Permission.PATIENT_BREAK_GLASS)
    async with db.statements() as conn:
        row, written = await audited_read.read_decision_async(db, conn, ctx.principal, patient_id, event,
                                                              break_glass_allowed=allowed)
        if row is None:
            ctx.trail.refusal(written)
            raise NotFound(NOT_FOUND)
        view = codec.to_view(ctx.runtime.cipher, row)
        await async_events.insert(db, conn, ctx.trail, written)
    return view


def _read_view(ctx: ServiceContext, row, written: dict) -> PatientView:
    ctx.trail.written(written)
    if row is None:
        raise NotFound(NOT_FOUND)
    return codec.to_view(ctx.runtime.cipher, row)


def _survivors(ctx: ServiceContext, rows: list) -> list:
    """An identifier of a merged record finds its survivor (issue 13), once."""
    out = {}
    for row in rows:
        found = repo.survivor_of(ctx.session, row) if row.merged_into is not None else row
        out.setdefault(found.id, found)
    return list(out.values())


def search(ctx: ServiceContext, system: str, value: str, extra: dict | None = None) -> list[PatientMatch]:
    norm = _normalised_or_refuse(ctx, system, value)
    views, event = _search_result(ctx, system, _survivors(ctx, _confirmed(ctx, system, norm)))
    ctx.trail.record(ctx.session, SEARCH, **{**event, "detail": {**event["detail"], **(extra or {})}})
    return views


async def search_async(ctx: ServiceContext, system: str, value: str) -> list[PatientMatch]:
    """`search` on the event loop (PostgreSQL): the same candidates, confirmation and event, two
    statements, two round trips (the event, written last, is the only write: see
    AsyncDatabase.statements); without a pool (SQLite, or an Idempotency-Key: see ServiceContext.aio), or for an
    identifier that does not parse (a refusal, written by the sync path), `search` in a worker thread."""
    db = ctx.aio
    try:
        norm = identifiers.normalise(system, value)
    except ValueError:
        db = None
    if db is None:
        return await to_thread.run_sync(search, ctx, system, value)
    by_custodian = ctx.runtime.indexer.for_all_custodians(system, norm)
    async with db.statements() as conn:  # the event is the only write, and the last statement
        rows = await db.all(conn, _CANDIDATES, {"system": system, "bidx": sorted(set(by_custodian.values()))}) \
            if by_custodian else []
        confirmed = _confirm(ctx, repo.matching_custodian(rows, by_custodian), system, norm)
        if not any(r.merged_into is not None for r in confirmed):
            views, event = _search_result(ctx, system, confirmed)
            await async_events.record(db, conn, ctx.trail, SEARCH, **event)
            return views
    # a merged record was found: its survivor is looked up on the sync path (rare), nothing written yet
    return await to_thread.run_sync(search, ctx, system, value)


SEARCH = "patient.search"
_CANDIDATES = Compiled.of(repo.candidates_statement())


def _normalised_or_refuse(ctx: ServiceContext, system: str, value: str) -> str:
    try:
        return identifiers.normalise(system, value)
    except ValueError as exc:
        ctx.trail.record(ctx.session, SEARCH, audit.INVALID, detail={"identifier_system": system if system in identifiers.SYSTEMS else None})
        raise InvalidInput(str(exc), field="value" if system in identifiers.SYSTEMS else "system") from None


def _search_result(ctx: ServiceContext, system: str, confirmed: list) -> tuple[list[PatientMatch], dict]:
    """The matches the caller may see (identity confirmation only outside capture scope) and the
    search's audit event: every confirmed patient is a subject, seen or not."""
    visible = [(r, repo.access_to(ctx.principal, r)) for r in confirmed]
    visible = [(r, a) for r, a in visible if a is not Access.NONE]
    views = [codec.to_match(ctx.runtime.cipher, r, full=a is Access.CAPTURE) for r, a in visible]
    event = dict(
        outcome=audit.SUCCESS if visible or not confirmed else audit.DENIED,
        patient=_ref(confirmed[0]) if len(confirmed) == 1 else None,
        subjects=[r.id for r in confirmed],
        outside_capture_scope=any(a is Access.SEARCH for _, a in visible),
        detail={"identifier_system": system, "matches": len(visible), "outside_search_scope": len(confirmed) - len(visible)},
    )
    return views, event


def list_patients(ctx: ServiceContext, cursor: str | None, limit: int) -> Page[PatientView]:
    action = "patient.list"
    try:
        rows, next_cursor = repo.list_in_capture(ctx.session, ctx.principal, cursor=cursor, limit=limit)
    except InvalidInput:
        ctx.trail.record(ctx.session, action, audit.INVALID, detail={"field": "cursor"})
        raise
    views = [codec.to_view(ctx.runtime.cipher, r) for r in rows]
    ctx.trail.record(ctx.session, action, audit.SUCCESS, subjects=[r.id for r in rows], detail={"count": len(rows)})
    return Page(views, next_cursor)


def update(ctx: ServiceContext, patient_id: uuid.UUID, if_match: str | None, changes: PatientUpdate) -> PatientView:
    action = "patient.update"
    row, _ = reachable(ctx, patient_id, action, allow=(Access.CAPTURE,))
    try:
        expected = parse_if_match(if_match)
        if expected != row.version:
            raise PreconditionFailed("the record has changed since it was read; fetch it again", field="If-Match")
    except (PreconditionFailed, PreconditionRequired):
        ctx.trail.record(ctx.session, action, audit.CONFLICT, resource_id=patient_id, patient=_ref(row), detail={"reason": "precondition"})
        raise
    data = changes.model_dump(exclude_unset=True)
    refused = newborns.update_refusal(row, data, ctx.session)
    if refused is not None:
        ctx.trail.record(ctx.session, action, audit.INVALID, resource_id=patient_id, patient=_ref(row),
                         detail={"field": refused.field})
        raise refused
    plain = plaintext_columns(data)
    _check_unique(ctx, plain, action, exclude=patient_id)
    values: dict = {}
    for key in ("sex", "birth_date", "birth_facility"):
        if data.get(key) is not None:
            values[key] = data[key]
    named = bool(row.unnamed and data.get("given_name"))
    if named:  # the newborn registered as "Baby of <mother>" gets its name: the flag is cleared for good
        values["unnamed"] = False
    if "district" in data and data["district"] is not None:
        try:
            values["province"], values["district"] = _residence(ctx, data["district"])
        except InvalidInput:
            ctx.trail.record(ctx.session, action, audit.INVALID, resource_id=patient_id, patient=_ref(row), detail={"field": "district"})
            raise
    if "guardian" in data:
        values["guardian_relationship"] = (data["guardian"] or {}).get("relationship")
    values.update(codec.encrypt_fields(ctx.runtime.cipher, row.custodian, patient_id, plain))
    now = datetime.now(UTC)
    if not repo.update_if_version(ctx.session, patient_id, expected, values, now):
        ctx.trail.record(ctx.session, action, audit.CONFLICT, resource_id=patient_id, patient=_ref(row), detail={"reason": "concurrent update"})
        raise PreconditionFailed("the record has changed since it was read; fetch it again", field="If-Match")
    report_queue.mark(ctx.session, patient_id)  # coverage aggregates: refreshed before the next report
    changed_index = [c for c in codec.INDEXED if c in plain]
    if changed_index:
        repo.replace_index(ctx.session, patient_id, changed_index,
                           codec.index_rows(ctx.runtime.indexer, row.custodian, patient_id, {c: plain[c] for c in changed_index}))
    new_row, _ = repo.get(ctx.session, ctx.principal, patient_id)
    if ctx.runtime.settings.linkage_check and _LINKED & set(data):  # the registration check's blocking keys follow the record
        linkage.store_keys(ctx, new_row.custodian, patient_id, linkage_records.from_row(ctx.runtime.cipher, new_row), replace=True)
    view = codec.to_view(ctx.runtime.cipher, new_row)
    ctx.trail.record(ctx.session, action, audit.SUCCESS, resource_id=patient_id, patient=_ref(new_row),
                     detail={"fields": sorted(data), **({"named": True} if named else {})})
    return view
