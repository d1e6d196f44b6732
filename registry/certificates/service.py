"""Certificate use cases: issue, revoke (each writes exactly one audit event), verify, trust list.

- Issuing needs the patient in the caller's *capture* scope (no search scope, no break-glass):
  a certificate is a document handed to the family by the clinic or office responsible for them.
  Out of scope answers 404 like any patient read.
- Revoking likewise needs the certificate's patient in capture scope; outside it, the answer is
  exactly that of a UVCI that does not exist (404 "certificate not found", audit `not_found`).
- The audit event names the UVCI, disease and signer kid; never a name or birth date.
- Nothing is issued under a document signer whose certificate is not valid at the time of
  issuance (verifiers would refuse it as `signer_not_valid`): `KeyUnavailable`, 503.
- Verification reads no patient record: it checks the presented text against the trust list
  (the registry's own document signers plus certificates imported into the keyring) and the
  revocation table. It is deliberately usable without an account (see api/routes/certificates.py).
"""

from __future__ import annotations

import uuid
import weakref
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from sqlalchemy.orm import Session

from registry.certificates import repository as repo
from registry.certificates.models import REVOCATION_REASONS
from registry.certificates.payload import Dose, build_dcc, latest_dose, new_uvci
from registry.certificates.valuesets import DEFAULT_DISEASE, DISEASES
from registry.clock import utc_now
from registry.context import ServiceContext
from registry.errors import Conflict, InvalidInput, NotFound
from registry.immunizations import repository as doses_repo
from registry.patients import codec
from registry.patients import repository as patients_repo
from registry.patients.repository import Access
from registry.patients.service import reachable
from registry.runtime import Runtime
from security.audit import trail as audit
from security.audit.trail import PatientRef
from security.certificates import hcert
from security.certificates.issuer import IssuerKeys
from security.certificates.trust import TrustList, uvci_hash
from security.crypto.errors import KeyUnavailable
from security.crypto.keyring import FileKeyring

RESOURCE = "Certificate"
CERTIFICATE_NOT_FOUND = "certificate not found"
UNNAMED = ("the child is registered before naming: a certificate is issued once the name is recorded "
           "(update the patient with its given name)")
_ISSUERS: weakref.WeakKeyDictionary[FileKeyring, IssuerKeys] = weakref.WeakKeyDictionary()


def issuer_keys(rt: Runtime) -> IssuerKeys:
    keys = _ISSUERS.get(rt.keyring)
    if keys is None:
        keys = _ISSUERS.setdefault(rt.keyring, IssuerKeys(rt.keyring, rt.settings.country))
    return keys


def issuer_name(custodian: str) -> str:
    return f"National Health Registry {custodian}"


@dataclass(frozen=True)
class Issued:
    hc1: str
    uvci: str
    dcc: dict
    disease: str
    issued_at: datetime
    expires_at: datetime
    doses: list[Dose] = field(default_factory=list)

    @property
    def disease_display(self) -> str:
        return DISEASES[self.disease][1]


def issue(ctx: ServiceContext, patient_id: uuid.UUID, disease: str | None = None, *, now: datetime | None = None) -> Issued:
    action = "certificate.issue"
    prow, _ = reachable(ctx, patient_id, action, allow=(Access.CAPTURE,))
    return issue_for(ctx, prow, disease, action=action, now=now)


def issue_for(ctx: ServiceContext, prow, disease: str | None, *, action: str, now: datetime | None = None) -> Issued:
    """Issue for a patient row the caller already reached (a clinic in capture scope, or a guardian
    bound to the child: `registry.citizens.service.certificate`); one `action` event either way.
    `issued_by` records the principal's id: a staff user's, or for a guardian the child's patient id."""
    pref = PatientRef(prow.id, prow.province, prow.district)
    if prow.unnamed:  # a certificate names its holder: none for a child registered before naming
        ctx.trail.record(ctx.session, action, audit.CONFLICT, resource_type=RESOURCE, patient=pref,
                         detail={"field": "given_name", "reason": "unnamed"})
        raise Conflict(UNNAMED, field="given_name")
    disease = disease or DEFAULT_DISEASE
    doses = doses_repo.for_patient(ctx.session, prow.id)
    dose = latest_dose(doses, disease) if disease in DISEASES else None
    if dose is None:
        field_name = "disease"
        ctx.trail.record(ctx.session, action, audit.INVALID, resource_type=RESOURCE, patient=pref,
                         detail={"field": field_name, "disease": disease if disease in DISEASES else None})
        if disease not in DISEASES:
            raise InvalidInput(f"disease must be one of: {', '.join(sorted(DISEASES))}", field=field_name)
        raise InvalidInput("the patient has no completed dose against this disease administered here "
                           "(reported doses are not certified)", field=field_name)
    rt = ctx.runtime
    issued_at = (now or utc_now()).replace(microsecond=0)
    # never a signer that is expired or not yet valid now; renewed within signer_renew_days of its expiry
    signer = issuer_keys(rt).signer(prow.custodian, at=issued_at, renew_days=rt.settings.certificates.signer_renew_days)
    country = rt.settings.country
    uvci = new_uvci(country, prow.custodian)
    expires_at = issued_at + timedelta(days=rt.settings.certificates.validity_days)
    if not signer.certificate.not_valid_before_utc <= issued_at <= signer.certificate.not_valid_after_utc:
        # every verifier would refuse it (signer_not_valid): issue nothing rather than a dud
        raise KeyUnavailable("the document signer's certificate is not valid at the time of issuance")
    dcc = build_dcc(family_name=codec.decrypt_column(rt.cipher, prow, "family_name"),
                    given_name=codec.decrypt_column(rt.cipher, prow, "given_name"), birth_date=prow.birth_date,
                    dose=dose, disease=disease, country=country, issuer=issuer_name(prow.custodian), uvci=uvci)
    hc1 = hcert.encode(hcert.claims(dcc, issuer=country, issued_at=issued_at, expires_at=expires_at), signer.key, signer.kid)
    repo.insert_issued(ctx.session, {"uvci": uvci, "patient_id": prow.id, "custodian": prow.custodian, "kid": signer.kid,
                                     "issued_at": issued_at, "expires_at": expires_at, "issued_by": ctx.principal.user_id})
    ctx.trail.record(ctx.session, action, audit.SUCCESS, resource_type=RESOURCE, resource_id=uvci, patient=pref,
                     detail={"uvci": uvci, "disease": disease, "kid": signer.kid.hex()})
    completed = [Dose(d.vaccine, d.dose_number, d.date_given, not d.administered_here) for d in doses
                 if d.status == "completed" and d.component_of is None]
    return Issued(hc1, uvci, dcc, disease, issued_at, expires_at, completed)


def revoke(ctx: ServiceContext, uvci: str, reason: str, *, now: datetime | None = None) -> dict:
    action = "certificate.revoke"
    row = repo.get(ctx.session, uvci)
    prow, access = patients_repo.get(ctx.session, ctx.principal, row.patient_id) if row is not None else (None, None)
    if prow is not None and prow.merged_into is not None:
        # a certificate issued before a merge is revoked through the survivor's scope (issue 13)
        prow, access = patients_repo.get(ctx.session, ctx.principal, patients_repo.survivor_of(ctx.session, prow).id)
    if prow is None or access is not Access.CAPTURE:
        # An unknown UVCI and one whose patient is outside the caller's capture scope answer alike
        # (status, body, audit outcome), so revoking cannot probe for certificates. The event of
        # the latter still names the patient and is flagged outside capture scope, for auditors.
        pref = PatientRef(prow.id, prow.province, prow.district) if prow is not None else None
        ctx.trail.record(ctx.session, action, audit.NOT_FOUND, resource_type=RESOURCE, resource_id=uvci[:64], patient=pref,
                         outside_capture_scope=prow is not None)
        raise NotFound(CERTIFICATE_NOT_FOUND)
    pref = PatientRef(prow.id, prow.province, prow.district)
    if reason not in REVOCATION_REASONS:
        ctx.trail.record(ctx.session, action, audit.INVALID, resource_type=RESOURCE, resource_id=uvci, patient=pref,
                         detail={"field": "reason"})
        raise InvalidInput(f"reason must be one of: {', '.join(REVOCATION_REASONS)}", field="reason")
    if row.revoked_at is not None:
        ctx.trail.record(ctx.session, action, audit.CONFLICT, resource_type=RESOURCE, resource_id=uvci, patient=pref)
        raise Conflict("the certificate is already revoked")
    revoked_at = now or utc_now()
    repo.insert_revocation(ctx.session, {"uvci": uvci, "revoked_at": revoked_at, "reason_code": reason,
                                         "revoked_by": ctx.principal.user_id})
    ctx.trail.record(ctx.session, action, audit.SUCCESS, resource_type=RESOURCE, resource_id=uvci, patient=pref,
                     detail={"uvci": uvci, "reason": reason})
    return {"uvci": uvci, "revoked_at": revoked_at, "reason": reason}


# --- verification (no patient record is read, nothing is logged) --------------------------------

def trust_list(rt: Runtime, session: Session | None = None) -> TrustList:
    """Own document signers + imported certificates; with a session, also the revoked UVCIs."""
    keys = issuer_keys(rt)
    tl = keys.trust_list()
    for name in rt.keyring.pem_files("trusted-"):
        tl.add(rt.keyring.pem_file(name, _refuse).decode(), label=name[len("trusted-"):-len(".crt.pem")])
    if session is not None:
        tl.revoked |= {uvci_hash(u) for u in repo.revoked_uvcis(session)}
    return tl


def _refuse() -> bytes:
    raise FileNotFoundError


def import_certificate(rt: Runtime, certificate_pem_or_b64: str) -> str:
    """Trust another issuer's document signer certificate; returns its kid (hex)."""
    from cryptography.hazmat.primitives import serialization

    signer = TrustList().add(certificate_pem_or_b64)
    pem = signer.certificate.public_bytes(serialization.Encoding.PEM)
    # an explicit operator action (like `nhr keys init`), so it may write in production too
    rt.keyring.pem_file(f"trusted-{signer.kid.hex()}.crt.pem", lambda: pem, create=True)
    return signer.kid.hex()


@dataclass(frozen=True)
class Verification:
    valid: bool
    code: str | None = None
    message: str | None = None
    kid: str | None = None
    issuer: str | None = None
    issued_at: datetime | None = None
    expires_at: datetime | None = None
    dcc: dict | None = None


def verify_text(text: str, trust: TrustList, *, now: datetime | None = None, is_revoked=None) -> Verification:
    try:
        v = hcert.verify(text, trust, now=now or utc_now(), is_revoked=is_revoked)
    except hcert.HcertError as exc:
        return Verification(False, exc.code, str(exc))
    d = v.decoded
    return Verification(True, None, None, d.kid.hex() if d.kid else None, d.issuer, d.issued_at, d.expires_at, d.dcc)


def verify(session: Session, rt: Runtime, text: str, *, now: datetime | None = None) -> Verification:
    return verify_text(text, trust_list(rt), now=now, is_revoked=lambda u: repo.is_revoked(session, u))
