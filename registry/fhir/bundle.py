"""`POST /fhir/R4` transaction and batch Bundles of Patient and Immunization creates.

- transaction: all or nothing. Entries run in the request's one database transaction; the first
  failure raises (its expression prefixed with the entry, `Bundle.entry[3].resource...`) and the
  unit of work rolls everything back: nothing is written but the refusal's audit event.
- batch: each entry on its own. A failed Patient entry is rolled back to its savepoint and
  answered with its status and an OperationOutcome; its refusal event is written again after the
  savepoint rollback (as the unit of work does after a request's rollback). A failed
  Immunization entry has written nothing but its refusal event (below). An entry refused before
  any service ran gets one `invalid`/`denied` event of its own.
- Each successful entry's `fullUrl` is absolute (the server's base + `Type/id`, FHIR R4
  bundle.html#bundle-unique); `response.location` is `Type/id/_history/version`, relative to the
  same base, and resolves (vread).
- Patients are processed before Immunizations (FHIR processing order puts creates together;
  this lets a dose reference a patient created in the same Bundle through its `urn:uuid:`
  fullUrl). The response lists entries in request order.
- Conditional create (`request.ifNoneExist`: `identifier=system|value`) answers 200 with the
  existing patient instead of creating a duplicate; a condition matching several is 412.
- Patient entries call the same service as a single request. Immunization entries are judged
  set-based (registry/immunizations/batch.py: one snapshot of their patients and doses, each
  entry against it plus the entries before it, then one insert per table), with the outcome and
  audit events each would get as a single request. In a transaction the first refusal (mapping
  or dose rule, in entry order) raises and the entries after it are not judged; in a batch the
  refused entries write only their refusal events and the accepted ones are written together in
  a savepoint (one by one instead if a concurrent writer took an id).
"""

from __future__ import annotations

import uuid

from registry.bulk.writer import integrity_errors
from registry.context import ServiceContext
from registry.errors import DomainError, Forbidden, audit_outcome
from registry.fhir import mapping, outcome, service
from registry.immunizations import batch as dose_batch
from registry.linkage.service import LikelyDuplicate
from registry.fhir.mapping import FhirInvalid
from security.access.permissions import Permission
from security.audit import trail as audit

MAX_ENTRIES = 1000
_KINDS = {"Patient": (Permission.PATIENT_CREATE, "patient.create"),
          "Immunization": (Permission.IMMUNIZATION_RECORD, "immunization.create")}


def _check_shape(bundle: dict) -> tuple[str, list[dict]]:
    if not isinstance(bundle, dict) or bundle.get("resourceType") != "Bundle":
        raise FhirInvalid("Bundle.resourceType", "POST /fhir/R4 takes a Bundle", status=400)
    kind = bundle.get("type")
    if kind not in ("transaction", "batch"):
        raise FhirInvalid("Bundle.type", "must be transaction or batch", status=400)
    entries = bundle.get("entry")
    if not isinstance(entries, list) or not entries:
        raise FhirInvalid("Bundle.entry", "at least one entry is required", status=400)
    if len(entries) > MAX_ENTRIES:
        raise FhirInvalid("Bundle.entry", f"at most {MAX_ENTRIES} entries per Bundle", status=400)
    return kind, entries


def _entry_kind(entry: object, i: int) -> str:
    where = f"Bundle.entry[{i}]"
    if not isinstance(entry, dict) or not isinstance(entry.get("resource"), dict):
        raise FhirInvalid(f"{where}.resource", "is required", status=400)
    request = entry.get("request") or {}
    rtype = entry["resource"].get("resourceType")
    if request.get("method") != "POST":
        raise FhirInvalid(f"{where}.request.method", "only POST (create) is supported in a Bundle", status=400)
    if rtype not in _KINDS or (request.get("url") or "").strip("/") != rtype:
        raise FhirInvalid(f"{where}.request.url", "must be Patient or Immunization, matching the resource", status=400)
    return rtype


def _prefixed(exc: DomainError, i: int, rtype: str | None) -> DomainError:
    """Point the error at the entry: `Patient.birthDate` -> `Bundle.entry[i].resource.birthDate`."""
    where = f"Bundle.entry[{i}]"
    field = outcome.expression_of(exc.field, rtype) if rtype else exc.field
    root = (field or "").split(".")[0].split("[")[0]
    if not field:
        field = where
    elif root in _KINDS:
        field = f"{where}.resource{field[len(root):]}"
    elif root != "Bundle":
        field = f"{where}.resource.{field}"
    exc.field = field
    if isinstance(exc, FhirInvalid):
        exc.expression = field
    return exc


class _Run:
    def __init__(self, ctx: ServiceContext, base: str) -> None:
        self.ctx = ctx
        self.base = base
        self.created: dict[str, uuid.UUID] = {}  # fullUrl urn:uuid -> patient id
        self.created_ids: set[str] = set()  # every Patient this Bundle created (a later likely duplicate is "in file")

    def resolve(self, reference: str) -> uuid.UUID:
        if reference not in self.created:
            raise FhirInvalid("Immunization.patient", "does not resolve to a Patient created in this Bundle")
        return self.created[reference]

    def entry(self, i: int, entry: dict, rtype: str) -> dict:
        ctx = self.ctx
        self.allowed(rtype)
        resource = entry["resource"]
        if rtype == "Patient":
            condition = (entry.get("request") or {}).get("ifNoneExist")
            try:
                status, res = service.create_patient(ctx, resource, condition, expression=f"Bundle.entry[{i}].request.ifNoneExist")
            except LikelyDuplicate as exc:  # the same child twice in this Bundle: say so (issue 13)
                created = {str(pid) for pid in self.created.values()} | self.created_ids
                if created & {c.get("id") for c in exc.candidates}:
                    raise exc.in_file() from None
                raise
            if status == 201:
                self.created_ids.add(res["id"])
            full_url = entry.get("fullUrl")
            if isinstance(full_url, str) and full_url.startswith("urn:uuid:"):
                self.created[full_url] = uuid.UUID(res["id"])
        else:
            status, res = 201, service.create_immunization(ctx, resource, self.resolve)
        return _created(self.base, rtype, status, res)

    def allowed(self, rtype: str) -> None:
        permission, action = _KINDS[rtype]
        if not self.ctx.principal.can(permission):
            self.ctx.trail.record(self.ctx.session, action, audit.DENIED, resource_type=rtype, detail={"reason": "role"})
            raise Forbidden("your role does not allow this")

    def dose(self, entry: dict):
        """An Immunization entry, validated and mapped: (patient id, DoseCreate)."""
        self.allowed("Immunization")
        return service.immunization_input(entry["resource"], self.resolve)

    def doses(self, todo: list[tuple[int, tuple]], *, stop_on_error: bool):
        """Judge the mapped doses set-based (registry/immunizations/batch.py): [(i, outcome)] and the plan."""
        plan = dose_batch.plan(self.ctx, [pair for _, pair in todo], stop_on_error=stop_on_error)
        return [(i, res) for (i, _), res in zip(todo, plan.outcomes)], plan


def _created(base: str, rtype: str, status: int, res: dict) -> dict:
    response = {"status": outcome.status_line(status), "location": f"{rtype}/{res['id']}"}
    version = (res.get("meta") or {}).get("versionId")
    if version:
        response["location"] += f"/_history/{version}"
        response["etag"] = f'W/"{version}"'
    return {"fullUrl": f"{base}/{rtype}/{res['id']}", "resource": res, "response": response}


def _dose_entry(run: _Run, recorded) -> dict:
    return _created(run.base, "Immunization", 201, mapping.immunization_to_fhir(recorded.view(run.ctx)))


def _order(entries: list) -> list[tuple[int, dict, str]]:
    typed = [(i, e, _entry_kind(e, i)) for i, e in enumerate(entries)]
    return [t for t in typed if t[2] == "Patient"] + [t for t in typed if t[2] != "Patient"]


def process(ctx: ServiceContext, bundle: dict, base: str) -> dict:
    """`base`: the server's absolute FHIR base URL (`https://host/fhir/R4`), for `fullUrl`."""
    kind, entries = _check_shape(bundle)
    run = _Run(ctx, base)
    results: list[dict | None] = [None] * len(entries)
    if kind == "transaction":
        ordered = _order(entries)
        for i, entry, rtype in ordered:
            if rtype == "Patient":
                try:
                    results[i] = run.entry(i, entry, rtype)
                except DomainError as exc:
                    raise _prefixed(exc, i, rtype) from None
        _transaction_doses(ctx, run, [(i, entry) for i, entry, rtype in ordered if rtype != "Patient"], results)
    else:
        typed = []
        for i, entry in enumerate(entries):
            try:
                typed.append((i, entry, _entry_kind(entry, i)))
            except FhirInvalid as exc:
                results[i] = _failed(ctx, exc, "patient.create", None)
        for i, entry, rtype in typed:
            if rtype == "Patient":
                results[i] = _batch_entry(ctx, run, i, entry, rtype)
        _batch_doses(ctx, run, [(i, entry) for i, entry, rtype in typed if rtype != "Patient"], results)
    return {"resourceType": "Bundle", "type": f"{kind}-response", "entry": results}


def _transaction_doses(ctx: ServiceContext, run: _Run, entries: list[tuple[int, dict]], results: list) -> None:
    """All or nothing, in entry order: the first refusal (mapping or dose rule) raises, and the
    entries after it are not judged, as when they ran one by one."""
    todo, failure = [], None
    for i, entry in entries:
        try:
            todo.append((i, run.dose(entry)))
        except DomainError as exc:
            failure = _prefixed(exc, i, "Immunization")
            break
    judged, plan = run.doses(todo, stop_on_error=True)
    for i, res in judged:
        if isinstance(res, DomainError):
            raise _prefixed(res, i, "Immunization")
    if failure is not None:
        raise failure
    dose_batch.write(ctx, plan)
    dose_batch.written(ctx, plan)
    for i, res in judged:
        results[i] = _dose_entry(run, res)


def _batch_doses(ctx: ServiceContext, run: _Run, entries: list[tuple[int, dict]], results: list) -> None:
    """Each entry on its own: refusals answered per entry (with their events), the accepted ones
    written together in a savepoint; if a concurrent writer took an id, they go one by one."""
    todo = []
    for i, entry in entries:
        mark = ctx.trail.refusal_mark()
        try:
            todo.append((i, run.dose(entry)))
        except DomainError as exc:
            if ctx.trail.refusal_mark() == mark:  # refused before any event: one event of its own
                results[i] = _failed(ctx, _prefixed(exc, i, "Immunization"), "immunization.create", "Immunization")
            else:
                results[i] = _response(_prefixed(exc, i, "Immunization"), "Immunization")
    judged, plan = run.doses(todo, stop_on_error=False)
    for i, res in judged:
        if isinstance(res, DomainError):
            results[i] = _response(_prefixed(res, i, "Immunization"), "Immunization")
    accepted = [(i, res) for i, res in judged if not isinstance(res, DomainError)]
    if not accepted:
        return
    savepoint = ctx.session.begin_nested()
    try:
        dose_batch.write(ctx, plan)
        savepoint.commit()
    except integrity_errors(ctx.session):
        savepoint.rollback()
        by_index = dict(entries)
        for i, _ in accepted:
            results[i] = _batch_entry(ctx, run, i, by_index[i], "Immunization")
        return
    dose_batch.written(ctx, plan)
    for i, res in accepted:
        results[i] = _dose_entry(run, res)


def _batch_entry(ctx: ServiceContext, run: _Run, i: int, entry: dict, rtype: str) -> dict:
    mark = ctx.trail.refusal_mark()
    savepoint = ctx.session.begin_nested()
    try:
        result = run.entry(i, entry, rtype)
    except DomainError as exc:
        savepoint.rollback()
        # the savepoint took this entry's events with it: write its refusals again (as the unit
        # of work does after a rollback), or one event for an entry refused before any service
        if ctx.trail.rewrite_refusals_since(ctx.session, mark) == 0:
            return _failed(ctx, _prefixed(exc, i, rtype), _KINDS[rtype][1], rtype)
        return _response(_prefixed(exc, i, rtype), rtype)
    savepoint.commit()
    return result


def _failed(ctx: ServiceContext, exc: DomainError, action: str, rtype: str | None) -> dict:
    """An entry refused with no refusal event of its own: one event, then its response."""
    code = audit_outcome(exc)
    ctx.trail.record(ctx.session, action, code, resource_type=rtype or "Patient", detail={"field": exc.field})
    return _response(exc, rtype)


def _response(exc: DomainError, rtype: str | None) -> dict:
    status, body = outcome.from_error(exc, rtype)
    return {"response": {"status": outcome.status_line(status), "outcome": body}}
