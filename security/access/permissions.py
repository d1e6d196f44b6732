"""Permissions are data: each role maps to a set of permissions and allowed purposes of use.

Invariants:
- A role that is not in `ROLE_PERMISSIONS` has no permission at all (fail closed).
- No role other than `clinic_worker` and `health_official` may read clinical data; the
  administrator manages users and facilities but reads no patient, and the auditor reads the
  audit log but no clinical record. The one exception is the `data_steward` (record linkage,
  issue 13): it holds no patient permission at all (it cannot browse, list or search patients)
  and reads decrypted identity data and doses only of the two records of a candidate pair in
  its review queue, through `linkage:review` (registry/linkage/steward_service.py).
- Purposes of use are HL7 v3 PurposeOfUse codes; a request may only state one its role allows.
"""

from __future__ import annotations

from enum import StrEnum


class Permission(StrEnum):
    PATIENT_CREATE = "patient:create"
    PATIENT_READ = "patient:read"
    PATIENT_UPDATE = "patient:update"
    PATIENT_LIST = "patient:list"
    PATIENT_SEARCH = "patient:search"
    PATIENT_BREAK_GLASS = "patient:break-glass"
    IMMUNIZATION_RECORD = "immunization:record"
    IMMUNIZATION_READ = "immunization:read"
    IMMUNIZATION_AMEND = "immunization:amend"
    CERTIFICATE_ISSUE = "certificate:issue"  # a patient's signed vaccination certificate (HC1)
    CERTIFICATE_REVOKE = "certificate:revoke"
    AUDIT_READ = "audit:read"
    AUDIT_REVIEW = "audit:review"  # record a finding on a break-glass access (auditor only)
    USER_MANAGE = "user:manage"
    USER_READ = "user:read"
    FACILITY_READ = "facility:read"
    JURISDICTION_READ = "jurisdiction:read"
    CITIZEN_READ_OWN = "citizen:read-own"  # a guardian's own (child's) record, doses and access log
    PATIENT_ISSUE_ACCESS_CODE = "patient:issue-access-code"
    IMMUNIZATION_DUE_LIST = "immunization:due-list"  # due/defaulter lists per facility or union council
    AEFI_RECORD = "aefi:record"  # report an adverse event following immunization
    AEFI_READ = "aefi:read"  # list and count adverse events in scope
    REPORT_READ = "report:read"  # aggregate coverage reports and exports (issue 4), suppressed, no patient rows
    REPORT_CONFIGURE = "report:configure"  # load target populations and DHIS2 mappings (reference data)
    SYNC_UPLOAD = "sync:upload"  # a device's batch upload (each item also needs its own permission)
    SYNC_READ = "sync:read"  # the changes feed of a facility in the caller's capture scope
    BULK_EXPORT = "bulk:export"  # FHIR Bulk Data $export of the jurisdiction (health officials only)
    LINKAGE_REVIEW = "linkage:review"  # the review queue and one candidate pair side by side (data stewards)
    LINKAGE_DECIDE = "linkage:decide"  # decide a pair: same child (merge), not the same, unsure
    LINKAGE_MERGE = "linkage:merge"  # list merges, unmerge


class Role(StrEnum):
    CLINIC_WORKER = "clinic_worker"
    HEALTH_OFFICIAL = "health_official"
    AUDITOR = "auditor"
    ADMIN = "admin"
    DATA_STEWARD = "data_steward"


P = Permission
ROLE_PERMISSIONS: dict[str, frozenset[Permission]] = {
    Role.CLINIC_WORKER: frozenset({
        P.PATIENT_CREATE, P.PATIENT_READ, P.PATIENT_UPDATE, P.PATIENT_LIST, P.PATIENT_SEARCH,
        P.PATIENT_BREAK_GLASS, P.IMMUNIZATION_RECORD, P.IMMUNIZATION_READ, P.IMMUNIZATION_AMEND,
        P.CERTIFICATE_ISSUE,
        P.FACILITY_READ, P.JURISDICTION_READ,
    }),
    Role.HEALTH_OFFICIAL: frozenset({
        P.PATIENT_READ, P.PATIENT_LIST, P.PATIENT_SEARCH, P.PATIENT_BREAK_GLASS, P.IMMUNIZATION_READ,
        P.CERTIFICATE_ISSUE, P.CERTIFICATE_REVOKE,
        P.FACILITY_READ, P.JURISDICTION_READ,
    }),
    Role.AUDITOR: frozenset({P.AUDIT_READ, P.AUDIT_REVIEW, P.FACILITY_READ, P.JURISDICTION_READ, P.USER_READ}),
    Role.ADMIN: frozenset({P.USER_MANAGE, P.USER_READ, P.FACILITY_READ, P.JURISDICTION_READ}),
}

# HL7 v3 PurposeOfUse: the first one listed is the role's default.
ROLE_PURPOSES: dict[str, tuple[str, ...]] = {
    Role.CLINIC_WORKER: ("TREAT", "ETREAT", "CAREMGT", "PATRQT"),
    Role.HEALTH_OFFICIAL: ("PUBHLTH", "HOPERAT", "ETREAT", "HQUALIMP"),
    Role.AUDITOR: ("HCOMPL", "HOPERAT", "LEGAL"),
    Role.ADMIN: ("HSYSADMIN", "HOPERAT"),
}
EMERGENCY_PURPOSE = "ETREAT"

# The scope level each role may be bound to.
ROLE_SCOPE_LEVELS: dict[str, frozenset[str]] = {
    Role.CLINIC_WORKER: frozenset({"facility"}),
    Role.HEALTH_OFFICIAL: frozenset({"district", "province", "national"}),
    Role.AUDITOR: frozenset({"district", "province", "national"}),
    Role.ADMIN: frozenset({"province", "national"}),
}


# The citizen (guardian) role is not a staff role: no user account has it. A citizen token is
# issued by `POST /api/v1/citizen/token` and bound to exactly one patient (scope level
# "patient", which every staff query treats as out of scope: registry/scoping fails closed).
CITIZEN_ROLE = "citizen"
ROLE_PERMISSIONS[Role.CLINIC_WORKER] = ROLE_PERMISSIONS[Role.CLINIC_WORKER] | {P.PATIENT_ISSUE_ACCESS_CODE}
# Offline sync (issue 5): clinic apps upload and download; officials may download a facility of their jurisdiction.
ROLE_PERMISSIONS[Role.CLINIC_WORKER] = ROLE_PERMISSIONS[Role.CLINIC_WORKER] | {P.SYNC_UPLOAD, P.SYNC_READ}
ROLE_PERMISSIONS[Role.HEALTH_OFFICIAL] = ROLE_PERMISSIONS[Role.HEALTH_OFFICIAL] | {P.SYNC_READ}
ROLE_PERMISSIONS[CITIZEN_ROLE] = frozenset({P.CITIZEN_READ_OWN})
ROLE_PURPOSES[CITIZEN_ROLE] = ("PATRQT",)
ROLE_SCOPE_LEVELS[CITIZEN_ROLE] = frozenset({"patient"})
# Field work (issue 4): vaccinators list who is due and report adverse events; officials read both.
ROLE_PERMISSIONS[Role.CLINIC_WORKER] = ROLE_PERMISSIONS[Role.CLINIC_WORKER] | {P.IMMUNIZATION_DUE_LIST, P.AEFI_RECORD, P.AEFI_READ}
ROLE_PERMISSIONS[Role.HEALTH_OFFICIAL] = ROLE_PERMISSIONS[Role.HEALTH_OFFICIAL] | {P.IMMUNIZATION_DUE_LIST, P.AEFI_READ}


# Reports (issue 4): officials read aggregates of their jurisdiction; officials and administrators
# load the reference figures behind them. Clinic workers and auditors read no report.
ROLE_PERMISSIONS[Role.HEALTH_OFFICIAL] = ROLE_PERMISSIONS[Role.HEALTH_OFFICIAL] | {P.REPORT_READ, P.REPORT_CONFIGURE}
ROLE_PERMISSIONS[Role.ADMIN] = ROLE_PERMISSIONS[Role.ADMIN] | {P.REPORT_CONFIGURE}
ROLE_PERMISSIONS[Role.HEALTH_OFFICIAL] = ROLE_PERMISSIONS[Role.HEALTH_OFFICIAL] | {P.BULK_EXPORT}

# Record linkage (issue 13): the data steward reviews candidate pairs of its district or province
# and merges or unmerges them. It reads no patient outside its queue (no patient:* permission).
ROLE_PERMISSIONS[Role.DATA_STEWARD] = frozenset({P.LINKAGE_REVIEW, P.LINKAGE_DECIDE, P.LINKAGE_MERGE,
                                                 P.FACILITY_READ, P.JURISDICTION_READ})
ROLE_PURPOSES[Role.DATA_STEWARD] = ("HOPERAT", "HQUALIMP")
ROLE_SCOPE_LEVELS[Role.DATA_STEWARD] = frozenset({"district", "province"})


def permissions_of(role: str) -> frozenset[Permission]:
    return ROLE_PERMISSIONS.get(role, frozenset())

# Permissions whose use touches patient data or accounts: every request gated by one of these
# writes exactly one audit event (the action named here is used for refusals at the gate).
AUDITED: dict[Permission, str] = {
    P.PATIENT_CREATE: "patient.create",
    P.PATIENT_READ: "patient.read",
    P.PATIENT_UPDATE: "patient.update",
    P.PATIENT_LIST: "patient.list",
    P.PATIENT_SEARCH: "patient.search",
    P.IMMUNIZATION_RECORD: "immunization.create",
    P.IMMUNIZATION_READ: "immunization.list",
    P.IMMUNIZATION_AMEND: "immunization.amend",
    P.CERTIFICATE_ISSUE: "certificate.issue",
    P.CERTIFICATE_REVOKE: "certificate.revoke",
    P.AUDIT_READ: "audit.query",
    P.AUDIT_REVIEW: "audit.finding",
    P.USER_MANAGE: "user.manage",
    P.CITIZEN_READ_OWN: "citizen.read",
    P.PATIENT_ISSUE_ACCESS_CODE: "patient.access_code",
    P.IMMUNIZATION_DUE_LIST: "immunization.due_list",
    P.AEFI_RECORD: "aefi.create",
    P.AEFI_READ: "aefi.list",
    P.REPORT_READ: "report.read",
    P.REPORT_CONFIGURE: "report.configure",
    P.SYNC_UPLOAD: "sync.batch",
    P.SYNC_READ: "sync.changes",
    P.BULK_EXPORT: "bulk.export",
    P.LINKAGE_REVIEW: "linkage.queue",
    P.LINKAGE_DECIDE: "linkage.decide",
    P.LINKAGE_MERGE: "linkage.merge",
}
