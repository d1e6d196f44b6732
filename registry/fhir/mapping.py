"""FHIR R4 <-> NHR mapping for Patient and Immunization (pure functions: no database, no HTTP).

Contract (used by the FHIR API and by bulk import/export):
- `validate(resource)` parses with fhir.resources (R4B models, compatible with R4 4.0.1 for
  Patient, Immunization and Bundle) and returns the resource dict, or raises `FhirInvalid`
  with a FHIRPath-like `expression` to the offending element.
- `patient_to_fhir(PatientView)` / `patient_from_fhir(dict) -> PatientCreate`
- `immunization_to_fhir(DoseView)` / `immunization_from_fhir(dict) -> (patient ref, DoseCreate)`
  where the patient ref is a registry UUID (`Patient/<uuid>`) or the raw `urn:uuid:...` string
  of a bundle-internal reference, resolved by the caller.

Invariants: messages name elements and rules, never the submitted values (no patient data
in an OperationOutcome). What NHR cannot represent is dropped, as listed in docs/fhir.md;
what it can represent but is wrong is refused.
"""

from __future__ import annotations

import re
import uuid

from pydantic import ValidationError

from registry.fhir import codes
from registry.fhir.immunization_map import immunization_from_fhir, immunization_to_fhir, patient_reference  # noqa: F401
from registry.fhir.invalid import FhirInvalid, _message, _path  # noqa: F401
from registry.patients.schemas import Guardian, PatientCreate, PatientView

_DISTRICT_CODE = re.compile(r"^[A-Z]{2}(-[A-Z0-9]+){2,}$")
_PK_PHONE_PREFIX = re.compile(r"^\s*(\+92|0092|03)")
# code elements with a required binding that the R4B models do not enforce
_REQUIRED_BINDINGS = {
    "Patient": {"gender": ("male", "female", "other", "unknown")},
    "Immunization": {"status": ("completed", "entered-in-error", "not-done")},
}


def validate(resource: dict) -> dict:
    """Parse `resource` with the fhir.resources R4B model of its resourceType; return it."""
    if not isinstance(resource, dict):
        raise FhirInvalid("Resource", "must be a JSON object", status=400)
    rtype = resource.get("resourceType")
    if not isinstance(rtype, str) or not rtype.isalpha():
        raise FhirInvalid("Resource.resourceType", "is required", status=400)
    from fhir.resources.R4B import get_fhir_model_class

    try:
        model = get_fhir_model_class(rtype)
    except (KeyError, ValueError):
        raise FhirInvalid("Resource.resourceType", "is not a FHIR R4 resource type", status=400) from None
    try:
        model.model_validate(resource)
    except ValidationError as exc:
        err = exc.errors()[0]
        raise FhirInvalid(_path(rtype, tuple(err.get("loc", ()))), _message(err), status=400) from None
    except (TypeError, ValueError):
        raise FhirInvalid(rtype, "is not a valid resource", status=400) from None
    for element, allowed in _REQUIRED_BINDINGS.get(rtype, {}).items():
        if element in resource and resource[element] not in allowed:
            raise FhirInvalid(f"{rtype}.{element}", "is not one of the allowed codes", status=400)
    return resource


# ---------------------------------------------------------------- Patient

def patient_to_fhir(view: PatientView, replaces: list[uuid.UUID] | tuple = (), see_also: list[uuid.UUID] | tuple = ()) -> dict:
    """`replaces`: records merged into this one (issue 13), as `Patient.link` `replaces`; a merged
    record itself says where it went (`replaced-by`) and is not `active`. `see_also`: records a
    data steward marked as possibly the same child (`unsure`)."""
    ids = [{"use": "official", "system": codes.SID_HEALTH_ID, "value": view.health_id}]
    for column in ("bform", "cnic"):
        value = getattr(view, column, None)
        if value:
            ids.append({"use": "official", "system": codes.IDENTIFIER_SYSTEMS[column], "value": value})
    name = {"use": "official", "given": [view.given_name]}
    if getattr(view, "unnamed", False):  # not yet named: no given name, a temporary name (docs/fhir.md)
        name = {"use": "temp", "text": view.display_name}
    if view.family_name:
        name["family"] = view.family_name
    res: dict = {"resourceType": "Patient", "id": str(view.id)}
    version = getattr(view, "version", None)
    updated = getattr(view, "updated_at", None)
    if version is not None:
        res["meta"] = {"versionId": str(version)}
        if updated is not None:
            res["meta"]["lastUpdated"] = updated.isoformat()
    res.update({"identifier": ids, "name": [name], "gender": view.sex, "birthDate": view.birth_date.isoformat()})
    if getattr(view, "phone", None):
        res["telecom"] = [{"system": "phone", "value": view.phone, "use": "mobile"}]
    address = {"use": "home", "district": view.district, "state": view.province, "country": "PK"}
    if getattr(view, "address", None):
        address = {"use": "home", "line": [view.address], **{k: v for k, v in address.items() if k != "use"}}
    res["address"] = [address]
    if view.guardian is not None:
        res["contact"] = [_guardian_to_fhir(view.guardian)]
    res["managingOrganization"] = {"identifier": {"system": codes.SID_FACILITY, "value": view.home_facility}}
    merged_into = getattr(view, "merged_into", None)
    links = [{"other": {"reference": f"Patient/{merged_into}"}, "type": "replaced-by"}] if merged_into else []
    links += [{"other": {"reference": f"Patient/{other}"}, "type": "replaces"} for other in replaces]
    links += [{"other": {"reference": f"Patient/{other}"}, "type": "seealso"} for other in see_also]
    if links:
        res["link"] = links
    if merged_into:
        res["active"] = False
    return res


def _guardian_to_fhir(g: Guardian) -> dict:
    contact: dict = {}
    if g.cnic:
        contact["extension"] = [{"url": codes.EXT_GUARDIAN_CNIC,
                                 "valueIdentifier": {"system": codes.SID_CNIC, "value": g.cnic}}]
    if g.relationship:
        contact["relationship"] = [{"coding": [{"system": codes.ROLE_CODE, "code": codes.RELATIONSHIPS[g.relationship]}],
                                    "text": g.relationship}]
    if g.name:
        contact["name"] = {"text": g.name}
    return contact


def _name_text(name: dict) -> tuple[str | None, str | None]:
    given = " ".join(x for x in name.get("given") or [] if x) or None
    family = name.get("family") or None
    if given is None and name.get("text"):
        return name["text"], None
    return given, family


def _pick_name(names: list) -> tuple[int, dict] | None:
    for i, n in enumerate(names):
        if n.get("use") == "official":
            return i, n
    for i, n in enumerate(names):
        if n.get("use") not in ("old", "anonymous"):
            return i, n
    return None


def _guardian_from_fhir(contacts: list) -> tuple[dict | None, str | None]:
    for i, c in enumerate(contacts):
        data: dict = {}
        for rel in c.get("relationship") or []:
            for coding in rel.get("coding") or []:
                if coding.get("system") == codes.ROLE_CODE and coding.get("code") in codes.ROLE_TO_RELATIONSHIP:
                    data["relationship"] = codes.ROLE_TO_RELATIONSHIP[coding["code"]]
        name = c.get("name") or {}
        text = name.get("text") or " ".join([*(name.get("given") or []), name.get("family") or ""]).strip()
        if text:
            data["name"] = text
        for ext in c.get("extension") or []:
            if ext.get("url") == codes.EXT_GUARDIAN_CNIC:
                data["cnic"] = (ext.get("valueIdentifier") or {}).get("value")
        if data:
            return data, f"Patient.contact[{i}]"
    return None, None


def patient_from_fhir(resource: dict) -> PatientCreate:
    """A validated Patient -> PatientCreate. The health ID is the registry's to assign and is
    not taken from input; unknown identifier systems, extra names, telecoms other than a
    Pakistani mobile number, and address parts NHR does not keep are dropped (docs/fhir.md)."""
    if resource.get("resourceType") != "Patient":
        raise FhirInvalid("Patient.resourceType", "must be Patient")
    where: dict[str, str] = {}
    data: dict = {}
    rid = resource.get("id")
    if rid:
        try:
            data["id"] = uuid.UUID(rid)
        except ValueError:
            pass  # a server-assigned id of another system: NHR assigns its own
    picked = _pick_name(resource.get("name") or [])
    if picked is None:
        raise FhirInvalid("Patient.name", "a name with a given name is required")
    i, name = picked
    if name.get("use") == "temp" and not name.get("given"):  # "Baby of <mother>": registered before naming
        data["unnamed"], name = True, {k: v for k, v in name.items() if k != "text"}
    data["given_name"], family = _name_text(name)
    if family:
        data["family_name"] = family
    where["given_name"] = where["family_name"] = f"Patient.name[{i}]"
    data["sex"] = resource.get("gender") or "unknown"
    where["sex"] = "Patient.gender"
    birth = resource.get("birthDate")
    if not birth or len(birth) != 10:
        raise FhirInvalid("Patient.birthDate", "a full birth date (YYYY-MM-DD) is required")
    data["birth_date"] = birth
    where["birth_date"] = "Patient.birthDate"
    for j, ident in enumerate(resource.get("identifier") or []):
        column = codes.SYSTEM_TO_REGISTRY.get(ident.get("system"))
        if column in ("bform", "cnic") and ident.get("value"):
            data[column] = ident["value"]
            where[column] = f"Patient.identifier[{j}].value"
    for j, tel in enumerate(resource.get("telecom") or []):
        value = tel.get("value")
        if tel.get("system") == "phone" and value and _PK_PHONE_PREFIX.match(value) and tel.get("use") != "old":
            data["phone"] = value
            where["phone"] = f"Patient.telecom[{j}].value"
            break
    _address_from_fhir(resource.get("address") or [], data, where)
    guardian, gwhere = _guardian_from_fhir(resource.get("contact") or [])
    if guardian:
        data["guardian"] = guardian
        where["guardian"] = gwhere
    try:
        return PatientCreate.model_validate(data)
    except ValidationError as exc:
        err = exc.errors()[0]
        field = str(err["loc"][0]) if err.get("loc") else ""
        message = (err.get("ctx") or {}).get("error")
        text = str(message) if isinstance(message, ValueError) else _message(err)
        raise FhirInvalid(where.get(field, "Patient"), text) from None


def _address_from_fhir(addresses: list, data: dict, where: dict) -> None:
    for i, a in enumerate(addresses):
        if a.get("use") in ("old", "billing") or a.get("type") == "postal":
            continue
        parts = [*(a.get("line") or []), a.get("city")]
        district = a.get("district")
        if district and _DISTRICT_CODE.match(district):
            data["district"] = district
            where["district"] = f"Patient.address[{i}].district"
        elif district:
            parts.append(district)
        text = ", ".join(p for p in parts if p)
        if text:
            data["address"] = text
            where["address"] = f"Patient.address[{i}]"
        return
