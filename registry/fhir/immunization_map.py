"""FHIR R4 Immunization <-> NHR dose (pure functions), with provenance (issue 12).

In (`immunization_from_fhir`): any vaccine code is taken (registry/immunizations/vocabulary.py):
a known one counts for its EPI vaccines, an unknown one is kept with its text (refused only
when there is no text); a missing or non-numeric dose number is inferred; `isSubpotent` doses
are recorded as SUBPOTENT. A resource is a dose *administered here* (by the posting user, at
their facility) only when it claims nothing else: `primarySource` not false, no
`reportOrigin`, no `performer`, no `location`, a full `occurrenceDateTime`. Anything else is a
*reported* dose: the poster is its recorder, and what it says of the giver is kept.

Out (`immunization_to_fhir`): `primarySource`, `reportOrigin`, `performer`, `location`,
`recorded`, `occurrence[x]` and `isSubpotent` of a resource NHR took in are given back exactly
as sent, and `vaccineCode` keeps every coding and the text sent after NHR's own codings (NHR keeps them encrypted, `fhir_source_ct`); for a reported dose an
element the sender did not send is not made up (no NHR performer, no NHR location). A dose
number NHR inferred carries the `dose-number-inferred` extension on `protocolApplied`; a dose
counting for more EPI vaccines than its code names carries one `counts-for` extension each.
"""

from __future__ import annotations

import uuid
from datetime import date

from pydantic import ValidationError

from registry.fhir import codes
from registry.fhir.invalid import FhirInvalid, _message
from registry.immunizations import not_done
from registry.immunizations.schemas import DoseCreate, DoseView
from registry.immunizations.vocabulary import SUBPOTENT, load as vocabulary

PROVENANCE = ("primarySource", "reportOrigin", "performer", "location", "recorded",
              "occurrenceDateTime", "occurrenceString", "isSubpotent")
# HL7 immunization-origin <-> NHR report origin
_FROM_HL7 = {"provider": "other_system", "record": "home_record", "recall": "recall", "school": "facility_register"}
_TO_HL7 = {"other_system": "provider", "home_record": "record", "recall": "recall", "facility_register": "record",
           "abroad": "provider"}


def _clean(text, limit: int = 200) -> str | None:
    if not isinstance(text, str):
        return None
    text = " ".join(text.split())[:limit]
    return text or None


def immunization_to_fhir(view: DoseView) -> dict:
    res: dict = {"resourceType": "Immunization", "id": str(view.id), "meta": {"versionId": str(view.version)}}
    if view.status == "superseded":
        res["meta"]["tag"] = [{"system": codes.DOSE_STATUS, "code": "superseded"}]
    extensions = []
    if view.supersedes_id:
        extensions.append({"url": codes.EXT_SUPERSEDES, "valueReference": {"reference": f"Immunization/{view.supersedes_id}"}})
    if getattr(view, "override_reason", None):
        extensions.append({"url": codes.EXT_OVERRIDE_REASON, "valueString": view.override_reason})
    counted = list(getattr(view, "counts_for", None) or [])
    if counted and counted != [view.vaccine]:
        extensions += [{"url": codes.EXT_COUNTS_FOR, "valueCode": v} for v in counted]
    reported = getattr(view, "provenance", "administered") == "reported"
    if reported and getattr(view, "country", None):
        extensions.append({"url": codes.EXT_COUNTRY, "valueCode": view.country})
    if extensions:
        res["extension"] = extensions
    res.update({"status": view.status if view.status in ("completed", not_done.STATUS) else "entered-in-error",
                "vaccineCode": _codeable(view), "patient": {"reference": f"Patient/{view.patient_id}"}})
    if getattr(view, "occurrence_text", None):
        res["occurrenceString"] = view.occurrence_text
    else:
        res["occurrenceDateTime"] = view.date_given.isoformat()
    res["recorded"] = getattr(view, "source_recorded", None) or view.recorded_at.isoformat()
    res["primarySource"] = bool(getattr(view, "primary_source", True))
    if view.vaccine == SUBPOTENT:
        res["isSubpotent"] = True
    if view.status == not_done.STATUS and getattr(view, "not_done_reason", None):
        res["statusReason"] = not_done.to_fhir(view.not_done_reason)
    if reported:
        _reported_elements(view, res)
    if view.lot_number:
        res["lotNumber"] = view.lot_number
    if not reported:
        res["location"] = {"identifier": {"system": codes.SID_FACILITY, "value": view.facility}}
        res["performer"] = [{"actor": {"identifier": {"system": codes.SID_USER, "value": str(view.performer_id)}}}]
    dose: dict = {"doseNumberPositiveInt": view.dose_number} if view.dose_number >= 1 else {"doseNumberString": str(view.dose_number)}
    if getattr(view, "dose_number_inferred", False):
        dose = {"extension": [{"url": codes.EXT_DOSE_NUMBER_INFERRED, "valueBoolean": True}], **dose}
    res["protocolApplied"] = [dose]
    source = getattr(view, "_fhir_source", None)
    if source:
        for key in PROVENANCE:
            if key in source:
                res[key] = source[key]
            elif reported:
                res.pop(key, None)  # what the sender did not say is not made up
        sent = source.get("vaccineCode") or {}
        have = {(c.get("system"), c.get("code")) for c in res["vaccineCode"].get("coding", [])}
        extra = [c for c in sent.get("coding") or [] if (c.get("system"), c.get("code")) not in have]
        if extra:
            res["vaccineCode"]["coding"] = [*res["vaccineCode"].get("coding", []), *extra]
        if sent.get("text"):
            res["vaccineCode"]["text"] = sent["text"]
    return res


def _codeable(view: DoseView) -> dict:
    code = getattr(view, "code", None)
    out = codes.vaccine_codeable(view.vaccine) if view.vaccine in codes.ANTIGENS or code is None else {"coding": []}
    if code is not None and code.code:
        sent = {"system": code.system, "code": code.code} if code.system else {"code": code.code}
        if (sent.get("system"), sent["code"]) not in {(c.get("system"), c.get("code")) for c in out["coding"]}:
            out["coding"].append(sent)
    if code is not None and code.text:
        out["text"] = code.text
    if not out["coding"]:
        out.pop("coding")
    return out


def _reported_elements(view: DoseView, res: dict) -> None:
    origin = getattr(view, "report_origin", None)
    if origin:
        res["reportOrigin"] = {"coding": [{"system": codes.REPORT_ORIGIN_NHR, "code": origin},
                                          {"system": codes.REPORT_ORIGIN_HL7, "code": _TO_HL7[origin]}]}
    actor: dict = {}
    if getattr(view, "performer_facility", None):
        actor["identifier"] = {"system": codes.SID_FACILITY, "value": view.performer_facility}
    if getattr(view, "performer_text", None):
        actor["display"] = view.performer_text
    if actor:
        res["performer"] = [{"actor": actor}]
    if getattr(view, "location_text", None):
        res["location"] = {"display": view.location_text}


def patient_reference(reference: str | None, expression: str) -> uuid.UUID | str:
    """`Patient/<uuid>` -> UUID; `urn:uuid:<uuid>` or `Patient/<other id>` -> the string (a
    reference to a resource of the same Bundle or import file, resolved by the caller)."""
    if reference:
        if reference.startswith("urn:uuid:"):
            return reference
        tail = reference.rsplit("/", 2)
        if len(tail) >= 2 and tail[-2] == "Patient":
            try:
                return uuid.UUID(tail[-1])
            except ValueError:
                if tail[-1] and len(tail) == 2:
                    return reference
    raise FhirInvalid(expression, "must reference a registry patient (Patient/<id>) or a bundle entry (urn:uuid:)")


def _vaccine(codeable: dict, data: dict) -> None:
    """`vaccine` (an NHR EPI antigen coding) or `code` (the first coding NHR knows, else the first
    coding with the text, else the text alone)."""
    coding = [c for c in codeable.get("coding") or [] if isinstance(c, dict)]
    for c in coding:
        found = codes.vaccine_from_coding(c.get("system"), c.get("code")) if c.get("system") == codes.EPI_ANTIGEN else None
        if found:
            data["vaccine"] = found
            return
    voc = vocabulary()
    for c in coding:
        if voc.lookup(c.get("system"), c.get("code")) is not None:
            data["code"] = {"system": c["system"], "code": c["code"].strip()}
            return
    text = _clean(codeable.get("text")) or next((_clean(c.get("display")) for c in coding if _clean(c.get("display"))), None)
    if text is None:
        raise FhirInvalid("Immunization.vaccineCode", "no coding is one NHR knows (docs/fhir.md); send the vaccine's text")
    for c in coding:
        if c.get("code"):
            data["code"] = {k: v for k, v in (("system", c.get("system")), ("code", c["code"].strip()), ("text", text)) if v}
            return
    data["code"] = {"text": text}


def _dose_number(resource: dict) -> int | None:
    for p in resource.get("protocolApplied") or []:
        if "doseNumberPositiveInt" in p:
            return p["doseNumberPositiveInt"]
        value = p.get("doseNumberString")
        if isinstance(value, str) and value.strip().isdigit():
            return int(value)
    return None  # absent or not a number ("C", "booster"): NHR infers it, and says so


def _origin(codeable: dict | None) -> str | None:
    for c in (codeable or {}).get("coding") or []:
        if c.get("system") == codes.REPORT_ORIGIN_NHR and c.get("code"):
            return c["code"]
        if c.get("system") == codes.REPORT_ORIGIN_HL7 and c.get("code") in _FROM_HL7:
            return _FROM_HL7[c["code"]]
    return "other_system" if codeable else None


def _provenance(resource: dict, data: dict) -> None:
    performers = [p.get("actor") or {} for p in resource.get("performer") or []]
    location = resource.get("location") or {}
    for ref in [*performers, location]:
        ident = ref.get("identifier") or {}
        if ident.get("system") == codes.SID_FACILITY and ident.get("value") and "performer_facility" not in data:
            data["performer_facility"] = str(ident["value"])[:64]
    names = "; ".join(n for n in (_clean(a.get("display")) for a in performers) if n)
    if names:
        data["performer_text"] = names[:200]
    if _clean(location.get("display")):
        data["location_text"] = _clean(location.get("display"))
    origin = _origin(resource.get("reportOrigin"))
    if origin:
        data["report_origin"] = origin
    for ext in resource.get("extension") or []:
        if ext.get("url") == codes.EXT_COUNTRY and isinstance(ext.get("valueCode"), str):
            data["country"] = ext["valueCode"]
    if isinstance(resource.get("recorded"), str):
        data["source_recorded"] = resource["recorded"]


def immunization_from_fhir(resource: dict) -> tuple[uuid.UUID | str, DoseCreate]:
    """A validated Immunization -> (patient ref, DoseCreate); see the module docstring."""
    if resource.get("resourceType") != "Immunization":
        raise FhirInvalid("Immunization.resourceType", "must be Immunization")
    if resource.get("status") not in ("completed", not_done.STATUS):
        raise FhirInvalid("Immunization.status", "only completed and not-done doses can be recorded")
    patient = patient_reference((resource.get("patient") or {}).get("reference"), "Immunization.patient")
    data: dict = {}
    _vaccine(resource.get("vaccineCode") or {}, data)
    number = _dose_number(resource)
    if number is not None:
        data["dose_number"] = number
    when, text = resource.get("occurrenceDateTime"), resource.get("occurrenceString")
    full = isinstance(when, str) and len(when) >= 10
    if full:
        try:
            data["date_given"] = date.fromisoformat(when[:10])
        except ValueError:
            raise FhirInvalid("Immunization.occurrenceDateTime", "is not a calendar date") from None
    elif isinstance(when, str) or isinstance(text, str):
        data["occurrence_text"] = _clean(when if isinstance(when, str) else text, 100)
    if not full and not data.get("occurrence_text"):
        raise FhirInvalid("Immunization.occurrence", "an occurrenceDateTime or an occurrenceString is required")
    here = (resource.get("primarySource") is not False and not resource.get("reportOrigin") and full
            and not resource.get("performer") and not resource.get("location"))
    if not here:
        data["provenance"] = "reported"
        data["primary_source"] = resource.get("primarySource") is True
        _provenance(resource, data)
    if resource.get("isSubpotent") is True:
        data["subpotent"] = True
    where = {"vaccine": "Immunization.vaccineCode", "code": "Immunization.vaccineCode", "dose_number": "Immunization.protocolApplied[0]",
             "date_given": "Immunization.occurrenceDateTime", "lot_number": "Immunization.lotNumber",
             "occurrence_text": "Immunization.occurrence", "source_recorded": "Immunization.recorded",
             "report_origin": "Immunization.reportOrigin", "performer_facility": "Immunization.performer",
             "performer_text": "Immunization.performer", "location_text": "Immunization.location",
             "country": "Immunization.extension"}
    if resource.get("lotNumber"):
        data["lot_number"] = resource["lotNumber"]
    if resource.get("status") == not_done.STATUS:  # a dose not given, with its coded reason (docs/field-work.md)
        data["status"], data["not_done_reason"] = not_done.STATUS, not_done.from_fhir(resource.get("statusReason"))
        where["not_done_reason"] = "Immunization.statusReason"
    for i, ext in enumerate(resource.get("extension") or []):
        if ext.get("url") == codes.EXT_OVERRIDE_REASON:
            data["override_reason"] = ext.get("valueString")
            where["override_reason"] = f"Immunization.extension[{i}]"
    rid = resource.get("id")
    if rid:
        try:
            data["id"] = uuid.UUID(rid)
        except ValueError:
            pass
    try:
        out = DoseCreate.model_validate(data)
    except ValidationError as exc:
        err = exc.errors()[0]
        field = str(err["loc"][0]) if err.get("loc") else ""
        message = (err.get("ctx") or {}).get("error")
        raise FhirInvalid(where.get(field, "Immunization"), str(message) if isinstance(message, ValueError) else _message(err)) from None
    out._fhir_source = {k: resource[k] for k in (*PROVENANCE, "vaccineCode") if k in resource}
    return patient, out
