"""Citizen access use cases: login with health ID and access code, the guardian's view of the
child's record, doses and access log, and reissuing a lost code at a facility.

Invariants:
- A citizen principal is bound to one patient by its token (scope level "patient", scope code
  the patient id); nothing in a request names the patient. Every citizen request checks that the
  code generation in the token is still current, so a reissued code ends older sessions.
- Login is throttled per (health ID, client) pair, per client, and per health ID for clients that
  have not logged in with it before (security/throttle.py), before any code is checked (keys in
  their own namespaces, separate from staff login), so a stranger cannot lock a guardian out; an unknown health ID, a malformed code and a wrong code
  all cost one argon2id verification and get the same answer. Every attempt is audited
  (`citizen.login`); neither the health ID nor the code appears in the event.
- Each use case writes exactly one audit event.
- The guardian's certificate is issued like a clinic's (registry/certificates/service.py: a new
  UVCI each time, doses administered here only), for the child the session is bound to, and
  audited as `citizen.certificate` (the UVCI in its detail, never a name).
"""

from __future__ import annotations

import dataclasses
import hashlib
import hmac
import uuid
from datetime import UTC, datetime

from registry import identifiers
from registry.certificates import service as certificates
from registry.citizens import codes
from registry.citizens import repository as repo
from registry.citizens.schemas import (AccessCodeIssued, AccessLogEntry, AccessLogPage, CitizenCertificate, CitizenDose,
                                       CitizenRecord, CitizenToken, Place)
from registry.context import ServiceContext
from registry.errors import Conflict, Forbidden, InvalidInput, TooManyAttempts, Unauthenticated
from registry.immunizations import repository as doses
from registry.immunizations.service import text as dose_text
from registry.patients import codec
from registry.patients import repository as patient_repo
from registry.patients.repository import Access
from registry.patients.service import _confirmed, reachable
from security import throttle, tokens
from security.access.permissions import CITIZEN_ROLE, ROLE_PURPOSES
from security.access.principal import AccessContext, Principal, Scope
from security.audit import trail as audit
from security.audit.trail import AuditTrail, PatientRef

LOGIN = "citizen.login"
BAD_CREDENTIALS = "incorrect health ID or access code"
STALE = "this access code has been replaced; log in with the new code"
_OFFICE_LEVELS = ("district", "province", "national")


def _ref(row) -> PatientRef:
    return PatientRef(row.id, row.province, row.district)


def _throttle_keys(ctx: ServiceContext, health_id: str, client: str) -> throttle.Keys:
    """The health ID is keyed before hashing: a plain SHA-256 of an 11-digit ID would be
    reversible by enumeration, and the throttle table (and the audit detail) must not hold it."""
    secret = ctx.runtime.keyring.secret("citizen-throttle")
    keyed = hmac.new(secret, health_id.strip().replace("-", "").encode(), hashlib.sha256).hexdigest()
    return throttle.Keys.of("citizen-", keyed, client)


def _find(ctx: ServiceContext, health_id: str):
    try:
        norm = identifiers.normalise(identifiers.HEALTH_ID_SYSTEM, health_id)
    except ValueError:
        return None
    found = _confirmed(ctx, identifiers.HEALTH_ID_SYSTEM, norm)
    return found[0] if len(found) == 1 else None


def login(ctx: ServiceContext, health_id: str, access_code: str, client: str) -> CitizenToken:
    rt, session, s = ctx.runtime, ctx.session, ctx.runtime.settings
    keys = _throttle_keys(ctx, health_id, client)
    key_detail = {"account_key": keys.account[:16]}
    why = throttle.refused(session, keys, throttle.Limits.of(s.login))
    if why is not None:
        ctx.trail.record(session, LOGIN, audit.DENIED, detail={"reason": "throttled", "throttle": why, **key_detail})
        raise TooManyAttempts("too many failed attempts; try again later", retry_after=s.login.window_seconds)
    patient = _find(ctx, health_id)
    stored = repo.code_of(session, patient.id) if patient is not None else None
    compact = codes.normalise(access_code)
    if stored is not None and compact is not None:
        ok = rt.code_hasher.verify(compact, stored.code_hash)
    else:
        rt.code_hasher.verify_dummy(access_code[:64])
        ok = False
    if not ok:
        # The failure count must outlive this request's rollback, like the refusal event itself.
        ctx.trail.keep_on_refusal(lambda sess: throttle.record_failure(sess, keys))
        ctx.trail.record(session, LOGIN, audit.UNAUTHENTICATED, patient=_ref(patient) if patient is not None else None,
                         detail={"reason": "bad credentials", **key_detail})
        raise Unauthenticated(BAD_CREDENTIALS)
    throttle.record_success(session, keys)
    # The scope code is the patient id in 32 hex digits: audit_events.actor_scope_code holds 32 characters.
    principal = Principal.build(patient.id, CITIZEN_ROLE, CITIZEN_ROLE,
                                Scope("patient", patient.id.hex, patient.province, patient.district))
    t = ctx.trail.context
    ctx.trail.context = AccessContext(principal, ROLE_PURPOSES[CITIZEN_ROLE][0], t.request_id, t.client_address)
    ctx.trail.record(session, LOGIN, audit.SUCCESS, resource_id=patient.id, patient=_ref(patient),
                     detail={"generation": stored.generation})
    config = dataclasses.replace(rt.tokens, ttl_seconds=s.citizen.token_ttl_seconds)
    token, ttl = tokens.issue(config, str(patient.id), {
        "name": CITIZEN_ROLE, "role": CITIZEN_ROLE, "scope_level": "patient", "scope_code": patient.id.hex,
        "prov": patient.province, "dist": patient.district, "gen": stored.generation,
    })
    return CitizenToken(access_token=token, expires_in=ttl)


def anonymous_context(session, rt, request_id: str, client: str) -> ServiceContext:
    """The context of a login request: no principal yet."""
    return ServiceContext(session, rt, AuditTrail(AccessContext(None, None, request_id, client)))


def _own(ctx: ServiceContext, action: str, generation: object):
    """The patient this citizen token is bound to, or an audited refusal."""
    p = ctx.principal
    if p.role != CITIZEN_ROLE or p.scope.level != "patient":
        ctx.trail.record(ctx.session, action, audit.DENIED, detail={"reason": "not a citizen token"})
        raise Forbidden("only a citizen token can use the citizen view")
    try:
        patient_id = uuid.UUID(p.scope.code)
    except ValueError:
        patient_id = None
    row, current = repo.patient_and_generation(ctx.session, patient_id) if patient_id else (None, None)
    if row is None or current is None or current != generation:
        ctx.trail.record(ctx.session, action, audit.UNAUTHENTICATED, patient=_ref(row) if row is not None else None,
                         detail={"reason": "code replaced" if row is not None else "no such patient"})
        raise Unauthenticated(STALE)
    # issue 13: a record merged into another shows its survivor; both guardians' codes keep working
    if row.merged_into is not None:
        row = patient_repo.survivor_of(ctx.session, row)
    if row.unnamed:  # the citizen view waits for the name (registry/patients/newborns.py)
        ctx.trail.record(ctx.session, action, audit.CONFLICT, patient=_ref(row), detail={"reason": "unnamed"})
        raise Conflict("the child is registered before naming: the citizen view opens once the clinic records "
                       "the child's name", field="given_name")
    return row


def _place(code: str | None, names: dict) -> Place | None:
    return Place(code=code, name=names.get(code)) if code else None


def _jurisdiction(ctx: ServiceContext, code: str | None) -> Place | None:
    if not code:
        return None
    node = ctx.runtime.jurisdictions.get(code, ctx.session)
    return Place(code=code, name=node.name if node is not None else None)


def read_own(ctx: ServiceContext, generation: object) -> CitizenRecord:
    action = "citizen.read"
    row = _own(ctx, action, generation)
    d = {name: codec.decrypt_column(ctx.runtime.cipher, row, name)
         for name in ("health_id", "given_name", "family_name", "guardian_name")}
    facilities = repo.facility_names(ctx.session, {row.home_facility})
    view = CitizenRecord(
        health_id=d["health_id"], given_name=d["given_name"], family_name=d["family_name"], sex=row.sex,
        birth_date=row.birth_date, guardian_name=d["guardian_name"], guardian_relationship=row.guardian_relationship,
        district=_jurisdiction(ctx, row.district), home_facility=_place(row.home_facility, facilities),
    )
    ctx.trail.record(ctx.session, action, audit.SUCCESS, resource_id=row.id, patient=_ref(row))
    return view


def immunizations(ctx: ServiceContext, generation: object) -> list[CitizenDose]:
    action = "citizen.immunizations"
    row = _own(ctx, action, generation)
    rows = [r for r in doses.for_patient(ctx.session, row.id) if r.component_of is None]
    names = repo.facility_names(ctx.session, {r.facility for r in rows})
    views = [CitizenDose(
        vaccine=r.vaccine, dose_number=r.dose_number, date_given=r.date_given, facility=_place(r.facility, names),
        status=r.status, voided=r.status == "entered-in-error", superseded=r.status == "superseded",
        recorded_at=r.recorded_at, reported=not r.administered_here,
        code_text=dose_text(ctx, r, "code_text_ct") if r.vaccine == "UNKNOWN" else None,
    ) for r in rows]
    ctx.trail.record(ctx.session, action, audit.SUCCESS, resource_type="Immunization", patient=_ref(row),
                     detail={"count": len(views)})
    return views


def certificate(ctx: ServiceContext, generation: object, disease: str | None = None) -> tuple[CitizenCertificate, object]:
    """(the certificate, the issued certificate with its payload and doses for the printable card)."""
    action = "citizen.certificate"
    row = _own(ctx, action, generation)
    issued = certificates.issue_for(ctx, row, disease, action=action)
    view = CitizenCertificate(uvci=issued.uvci, hc1=issued.hc1, disease=issued.disease, disease_display=issued.disease_display,
                              issued_at=issued.issued_at, expires_at=issued.expires_at)
    return view, issued


def access_log(ctx: ServiceContext, generation: object, cursor: str | None, limit: int,
               include_own_views: bool) -> AccessLogPage:
    action = "citizen.access_log"
    row = _own(ctx, action, generation)
    try:
        # the survivor's log shows the accesses to every record merged into it (issue 13)
        ids = [row.id, *patient_repo.merged_chain(ctx.session, row.id)]
        events, nxt = repo.access_events(ctx.session, ids, cursor=cursor, limit=limit,
                                         include_own_views=include_own_views)
    except InvalidInput:
        ctx.trail.record(ctx.session, action, audit.INVALID, resource_type="AuditEvent", patient=_ref(row),
                         detail={"field": "cursor"})
        raise
    at_facility = {e.actor_scope_code for e in events if e.actor_scope_level == "facility"}
    facilities = repo.facility_names(ctx.session, at_facility)
    show_names = ctx.runtime.settings.citizen.show_staff_names
    staff = repo.staff_names(ctx.session, {e.actor_user_id for e in events if e.actor_user_id and e.actor_role != CITIZEN_ROLE}) \
        if show_names else {}
    items = []
    for e in events:
        level = e.actor_scope_level
        items.append(AccessLogEntry(
            occurred_at=e.occurred_at,
            action=e.action, outcome=e.outcome, role=e.actor_role, purpose_of_use=e.purpose_of_use,
            emergency=bool(e.break_glass), outside_usual_scope=bool(e.outside_capture_scope),
            facility=_place(e.actor_scope_code, facilities) if level == "facility" else None,
            office=_jurisdiction(ctx, e.actor_scope_code) if level in _OFFICE_LEVELS else None,
            staff_name=(staff.get(e.actor_user_id) or e.actor_username) if show_names and e.actor_role
            not in (None, CITIZEN_ROLE) else None,
        ))
    ctx.trail.record(ctx.session, action, audit.SUCCESS, resource_type="AuditEvent", patient=_ref(row),
                     detail={"count": len(items)})
    return AccessLogPage(items=items, next_cursor=nxt)


def reissue(ctx: ServiceContext, patient_id: uuid.UUID) -> AccessCodeIssued:
    """A facility in the patient's capture scope replaces a lost code; the old one stops working."""
    action = "patient.access_code"
    # Hashed before the first statement: on SQLite that statement takes the write lock, and the
    # ~30 ms of argon2id should not be spent holding it.
    code, code_hash = codes.issue(ctx.runtime.code_hasher)
    row, _ = reachable(ctx, patient_id, action, allow=(Access.CAPTURE,))
    if ctx.principal.facility is None:
        ctx.trail.record(ctx.session, action, audit.DENIED, resource_id=patient_id, patient=_ref(row),
                         detail={"reason": "not bound to a facility"})
        raise Forbidden("only staff bound to a facility can issue access codes")
    now = datetime.now(UTC)
    generation = repo.replace_code(ctx.session, patient_id, code_hash, now, ctx.principal.user_id)
    ctx.trail.record(ctx.session, action, audit.SUCCESS, resource_id=patient_id, patient=_ref(row),
                     detail={"generation": generation})
    return AccessCodeIssued(patient_id=patient_id, access_code=code, generation=generation, issued_at=now)
