"""Audit events as FHIR R4 AuditEvent resources, following the IHE Basic Audit Log Patterns (BALP).

Mapping (https://profiles.ihe.net/ITI/BALP/):
- patient.read -> PatientRead: type rest, subtype read, action R.
- patient.search, patient.list -> PatientQuery: type rest, subtype search, action E, plus a query
  entity (type 2 System Object, role 24 Query) that names the kind of query only: the searched
  identifier's *system* when the event recorded one and the number of results, never the value.
- patient.create / immunization.create -> C (subtype create); patient.update and immunization
  amendments -> U (subtype update); immunization.void -> D (subtype delete);
  immunization.list -> R (subtype search, a read of the patient's doses).
- Anything else (logins, the auditors' own requests) -> type rest, action E, no BALP profile.
- outcome: 0 success, 4 minor failure (denied, not found, invalid, conflict, unauthenticated),
  8 serious failure (error).
- agents: the user (requestor; who = the NHR user id, with the username as display; role and
  scope as the agent's role and location), plus the client (DICOM 110153 Source Role ID) with
  its network address.
- source: this NHR instance (security-source-type 4, application server).
- entity: the patient as `Patient/<opaque id>` (type 1 Person, role 1 Patient) and the resource
  acted on when it is not the patient (e.g. `Immunization/<id>`).
- purposeOfEvent: the HL7 v3 PurposeOfUse code (system v3-ActReason). Break-glass adds
  `meta.security` BTG (v3-ActCode "break the glass") and the reason as an agent purpose text.

No clinical data and no name of a patient is in the output; the audit row does not hold any.
"""

from __future__ import annotations

from datetime import UTC

from security.audit import trail as audit

BALP = "https://profiles.ihe.net/ITI/BALP/StructureDefinition/IHE.BasicAudit."
EVENT_TYPE = "http://terminology.hl7.org/CodeSystem/audit-event-type"
RESTFUL = "http://hl7.org/fhir/restful-interaction"
DCM = "http://dicom.nema.org/resources/ontology/DCM"
ENTITY_TYPE = "http://terminology.hl7.org/CodeSystem/audit-entity-type"
OBJECT_ROLE = "http://terminology.hl7.org/CodeSystem/object-role"
ACT_REASON = "http://terminology.hl7.org/CodeSystem/v3-ActReason"
ACT_CODE = "http://terminology.hl7.org/CodeSystem/v3-ActCode"
PARTICIPATION = "http://terminology.hl7.org/CodeSystem/v3-ParticipationType"
SOURCE_TYPE = "http://terminology.hl7.org/CodeSystem/security-source-type"
NHR_ROLE = "urn:nhr:role"
NHR_USER = "urn:nhr:user"
NHR_ACTION = "urn:nhr:audit-action"

# action -> (FHIR restful interaction, AuditEvent.action, BALP profile or None)
PATTERNS: dict[str, tuple[str, str, str | None]] = {
    "patient.read": ("read", "R", "PatientRead"),
    "patient.search": ("search-type", "E", "PatientQuery"),
    "patient.list": ("search-type", "E", "PatientQuery"),
    "patient.create": ("create", "C", "PatientCreate"),
    "patient.update": ("update", "U", "PatientUpdate"),
    "immunization.create": ("create", "C", "PatientCreate"),
    "immunization.amend": ("update", "U", "PatientUpdate"),
    "immunization.correct": ("update", "U", "PatientUpdate"),
    "immunization.void": ("delete", "D", "PatientDelete"),
    "immunization.list": ("search-type", "R", "PatientQuery"),
}
OUTCOME_CODES = {audit.SUCCESS: "0", audit.ERROR: "8"}  # every other refusal is a minor failure, "4"


def outcome_code(outcome: str) -> str:
    return OUTCOME_CODES.get(outcome, "4")


def _instant(ts) -> str:
    if ts.tzinfo is None:
        ts = ts.replace(tzinfo=UTC)
    return ts.astimezone(UTC).isoformat().replace("+00:00", "Z")


def to_resource(ev, *, source_name: str) -> dict:
    """One audit row (a mapping with the audit_events columns) as a FHIR R4 AuditEvent dict."""
    interaction, act, profile = PATTERNS.get(ev["action"], (None, "E", None))
    meta: dict = {}
    # BALP profiles describe a successful access with an identifiable patient (or a patient query).
    if profile and ev["outcome"] == audit.SUCCESS and (ev["patient_id"] is not None or profile == "PatientQuery"):
        meta["profile"] = [BALP + profile]
    if ev["break_glass"]:
        meta["security"] = [{"system": ACT_CODE, "code": "BTG", "display": "break the glass"}]
    subtype = [{"system": NHR_ACTION, "code": ev["action"]}]
    if interaction:
        subtype.insert(0, {"system": RESTFUL, "code": interaction})
    res: dict = {
        "resourceType": "AuditEvent",
        "id": str(ev["id"]),
        "type": {"system": EVENT_TYPE, "code": "rest", "display": "Restful Operation"},
        "subtype": subtype,
        "action": act,
        "recorded": _instant(ev["occurred_at"]),
        "outcome": outcome_code(ev["outcome"]),
        "outcomeDesc": ev["outcome"],
        "agent": _agents(ev),
        "source": {"site": source_name, "observer": {"display": source_name},
                   "type": [{"system": SOURCE_TYPE, "code": "4", "display": "Application Server"}]},
    }
    if meta:
        res["meta"] = meta
    if ev["purpose_of_use"]:
        res["purposeOfEvent"] = [{"coding": [{"system": ACT_REASON, "code": ev["purpose_of_use"]}]}]
    entities = _entities(ev, profile == "PatientQuery")
    if entities:
        res["entity"] = entities
    return res


def _agents(ev) -> list[dict]:
    user: dict = {
        "type": {"coding": [{"system": PARTICIPATION, "code": "IRCP", "display": "information recipient"}]},
        "requestor": True,
    }
    if ev["actor_user_id"] is not None:
        user["who"] = {"identifier": {"system": NHR_USER, "value": str(ev["actor_user_id"])},
                       "display": ev["actor_username"]}
        user["altId"] = ev["actor_username"]
    else:
        user["who"] = {"display": "unauthenticated client"}
    if ev["actor_role"]:
        user["role"] = [{"coding": [{"system": NHR_ROLE, "code": ev["actor_role"]}]}]
    if ev["actor_scope_level"]:
        kind = "Location" if ev["actor_scope_level"] == "facility" else "Organization"
        user["location"] = {"identifier": {"system": f"urn:nhr:{ev['actor_scope_level']}", "value": ev["actor_scope_code"]},
                            "display": f"{kind}: {ev['actor_scope_level']} {ev['actor_scope_code']}"}
    if ev["purpose_of_use"]:
        user["purposeOfUse"] = [{"coding": [{"system": ACT_REASON, "code": ev["purpose_of_use"]}]}]
    if ev["break_glass"]:
        user.setdefault("purposeOfUse", []).append({"coding": [{"system": ACT_CODE, "code": "BTG"}],
                                                    "text": ev["break_glass_reason"] or "break the glass"})
    agents = [user]
    if ev["client_address"]:
        agents.append({"type": {"coding": [{"system": DCM, "code": "110153", "display": "Source Role ID"}]},
                       "who": {"display": "client"}, "requestor": False,
                       "network": {"address": ev["client_address"], "type": "2"}})
    return agents


def _entities(ev, query: bool) -> list[dict]:
    out: list[dict] = []
    if ev["patient_id"] is not None:
        out.append({"what": {"reference": f"Patient/{ev['patient_id']}"},
                    "type": {"system": ENTITY_TYPE, "code": "1", "display": "Person"},
                    "role": {"system": OBJECT_ROLE, "code": "1", "display": "Patient"}})
    rtype, rid = ev["resource_type"], ev["resource_id"]
    if rid and rtype != "Patient":
        out.append({"what": {"reference": f"{rtype}/{rid}"},
                    "type": {"system": ENTITY_TYPE, "code": "2", "display": "System Object"},
                    "role": {"system": OBJECT_ROLE, "code": "4", "display": "Domain Resource"}})
    if query:
        detail = ev["detail"] or {}
        system = detail.get("identifier_system") if isinstance(detail.get("identifier_system"), str) else None
        q = {"type": {"system": ENTITY_TYPE, "code": "2", "display": "System Object"},
             "role": {"system": OBJECT_ROLE, "code": "24", "display": "Query"},
             "description": f"{ev['action']} by {system}" if system else ev["action"]}
        count = detail.get("count", detail.get("matches"))
        if isinstance(count, int):
            q["detail"] = [{"type": "result-count", "valueString": str(count)}]
        out.append(q)
    return out
