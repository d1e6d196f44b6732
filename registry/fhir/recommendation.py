"""A patient's schedule (registry/schedules) as one FHIR ImmunizationRecommendation.

- id = the patient's id (one recommendation resource per patient, computed on read, as of today).
- Each forecast dose is a `recommendation` with vaccineCode (NHR antigen + mapped codes),
  doseNumber, series, forecastStatus and dateCriterion earliest / recommended / latest (LOINC
  30981-5 earliest date to give, 30980-7 date vaccine due, 59777-3 latest date to give).
- forecastStatus: `due` and `overdue` use the HL7 immunization-recommendation-status codes;
  every status also carries the engine's own code (`not_yet_due`, `not_applicable` have no
  HL7 equivalent) in the NHR forecast-status code system.
- `supportingImmunization` is not filled: the recorded doses are Immunization resources,
  searchable by patient.
"""

from __future__ import annotations

from registry.fhir import codes

HL7_STATUS = "http://terminology.hl7.org/CodeSystem/immunization-recommendation-status"
LOINC = "http://loinc.org"
_CRITERIA = (("earliest", "30981-5", "Earliest date to give"), ("recommended", "30980-7", "Date vaccine due"),
             ("latest", "59777-3", "Latest date to give immunization"))
_HL7 = {"due": "due", "overdue": "overdue"}
_TEXT = {"due": "due", "overdue": "overdue", "not_yet_due": "not yet due", "not_applicable": "no longer applicable"}


def _status(status: str) -> dict:
    coding = [{"system": HL7_STATUS, "code": _HL7[status]}] if status in _HL7 else []
    coding.append({"system": codes.FORECAST_STATUS, "code": status})
    return {"coding": coding, "text": _TEXT.get(status, status)}


def _dose(f: dict) -> dict:
    out = {"vaccineCode": [codes.vaccine_codeable(f["vaccine"])]}
    out["forecastStatus"] = _status(f["status"])
    out["dateCriterion"] = [{"code": {"coding": [{"system": LOINC, "code": code, "display": display}]},
                             "value": f[key].isoformat()} for key, code, display in _CRITERIA]
    out["series"] = f["series"]
    if f["dose_number"] >= 1:
        out["doseNumberPositiveInt"] = f["dose_number"]
    else:
        out["doseNumberString"] = str(f["dose_number"])
    return out


def recommendation_to_fhir(schedule: dict) -> dict:
    """`schedule` is what registry/schedules/service.for_patient returns."""
    pid = str(schedule["patient_id"])
    ref = schedule["schedule"]
    return {
        "resourceType": "ImmunizationRecommendation",
        "id": pid,
        "meta": {"tag": [{"system": f"{codes.BASE}/CodeSystem/schedule",
                          "code": f"{ref['code']}@{ref['version']}", "display": f"schedule of {ref['jurisdiction']}"}]},
        "patient": {"reference": f"Patient/{pid}"},
        "date": schedule["as_of"].isoformat(),
        "authority": {"identifier": {"system": codes.SID_JURISDICTION, "value": ref["jurisdiction"]}},
        # 1..* in FHIR: a schedule with nothing left to give says so ("complete")
        "recommendation": [_dose(f) for f in schedule["forecast"]] or [
            {"targetDisease": {"text": "routine immunization schedule"},
             "forecastStatus": {"coding": [{"system": HL7_STATUS, "code": "complete"}], "text": "complete"}}],
    }
