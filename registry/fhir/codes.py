"""Canonical URIs and codes NHR uses on FHIR (documented in docs/fhir.md).

- Identifier systems: the registry's health ID, NADRA CNIC and B-form numbers, facility codes,
  jurisdiction codes and NHR users (performers).
- The EPI antigen code system: the NHR vaccine codes (registry/immunizations/vaccines.py), each
  with the SNOMED CT, CVX and ICD-11 codes it maps to where one exists. Output carries the NHR
  coding first and the mapped codings after it; input is accepted in any of them (NHR first).
  Mapped codes marked `verify` in the doc must be checked against licensed releases before use
  in production exchange; the NHR code is authoritative.
"""

from __future__ import annotations

BASE = "https://nhr.gov.pk/fhir"
SID_HEALTH_ID = f"{BASE}/sid/health-id"
SID_CNIC = f"{BASE}/sid/cnic"
SID_BFORM = f"{BASE}/sid/bform"
SID_FACILITY = f"{BASE}/sid/facility"
SID_JURISDICTION = f"{BASE}/sid/jurisdiction"
SID_USER = f"{BASE}/sid/user"
EPI_ANTIGEN = f"{BASE}/CodeSystem/epi-antigen"
DOSE_STATUS = f"{BASE}/CodeSystem/dose-status"
EXT_GUARDIAN_CNIC = f"{BASE}/StructureDefinition/guardian-cnic"
EXT_SUPERSEDES = f"{BASE}/StructureDefinition/supersedes"
EXT_ACCESS_CODE = f"{BASE}/StructureDefinition/access-code"  # only in the registration response
# Why a dose the schedule refuses was recorded anyway (10-500 characters; stored encrypted).
EXT_OVERRIDE_REASON = f"{BASE}/StructureDefinition/schedule-override-reason"
FORECAST_STATUS = f"{BASE}/CodeSystem/forecast-status"
# Issue 12: reported doses and every vaccine code
VACCINE_GROUP = f"{BASE}/CodeSystem/vaccine-group"        # INFLUENZA, HPV, ... UNKNOWN, SUBPOTENT
REPORT_ORIGIN_NHR = f"{BASE}/CodeSystem/report-origin"    # home_record, facility_register, other_system, abroad, recall
REPORT_ORIGIN_HL7 = "http://terminology.hl7.org/CodeSystem/immunization-origin"
EXT_COUNTS_FOR = f"{BASE}/StructureDefinition/counts-for"  # valueCode: each EPI vaccine a dose counts for
EXT_DOSE_NUMBER_INFERRED = f"{BASE}/StructureDefinition/dose-number-inferred"  # on protocolApplied
EXT_COUNTRY = f"{BASE}/StructureDefinition/country-of-vaccination"  # valueCode, ISO 3166-1 alpha-2
PK_EPI_NAME = f"{BASE}/CodeSystem/pk-epi-name"

SNOMED = "http://snomed.info/sct"
CVX = "http://hl7.org/fhir/sid/cvx"
ICD11 = "http://id.who.int/icd/release/11/mms"
ROLE_CODE = "http://terminology.hl7.org/CodeSystem/v3-RoleCode"

# registry identifier system (registry/identifiers.py) <-> FHIR identifier system
IDENTIFIER_SYSTEMS = {"nhr": SID_HEALTH_ID, "cnic": SID_CNIC, "bform": SID_BFORM}
SYSTEM_TO_REGISTRY = {v: k for k, v in IDENTIFIER_SYSTEMS.items()}

# guardian relationship (registry/patients/models.py) <-> HL7 v3 RoleCode
RELATIONSHIPS = {"mother": "MTH", "father": "FTH", "grandparent": "GRPRN", "sibling": "SIB", "other": "FAMMEMB"}
ROLE_TO_RELATIONSHIP = {v: k for k, v in RELATIONSHIPS.items()} | {"NMTH": "mother", "NFTH": "father",
                                                                  "GRMTH": "grandparent", "GRFTH": "grandparent",
                                                                  "BRO": "sibling", "SIS": "sibling"}

# NHR antigen -> (display, [(system, code, display)]). See docs/fhir.md for sources and caveats.
ANTIGENS: dict[str, tuple[str, list[tuple[str, str, str]]]] = {
    "BCG": ("BCG vaccine", [(SNOMED, "1861000221106", "Bacillus Calmette-Guerin vaccine"), (CVX, "19", "BCG")]),
    "OPV": ("Oral polio vaccine", [(SNOMED, "1031000221108", "Human poliovirus antigen-containing vaccine"),
                                   (CVX, "182", "OPV, unspecified")]),
    "HEPB": ("Hepatitis B vaccine (birth dose)", [(SNOMED, "871822003", "Hepatitis B virus antigen only vaccine"),
                                                  (CVX, "08", "Hep B, adolescent or pediatric")]),
    "PENTA": ("DTwP-HepB-Hib (pentavalent) vaccine", [(SNOMED, "1162637003", "DTwP-HepB-Hib vaccine"),
                                                      (CVX, "198", "DTP-hepB-Hib Pentavalent Non-US")]),
    "PCV": ("Pneumococcal conjugate vaccine", [(SNOMED, "1252709000", "Pneumococcal conjugate vaccine"),
                                               (CVX, "152", "Pneumococcal Conjugate, unspecified formulation")]),
    "ROTA": ("Rotavirus vaccine", [(SNOMED, "1081000221109", "Rotavirus antigen-containing vaccine"),
                                   (CVX, "122", "rotavirus, unspecified formulation")]),
    "IPV": ("Inactivated polio vaccine", [(SNOMED, "871740006", "Inactivated poliovirus vaccine"), (CVX, "10", "IPV")]),
    "MR": ("Measles-rubella vaccine", [(SNOMED, "871817003", "Measles and rubella vaccine"),
                                       (CVX, "04", "M/R")]),
    "TCV": ("Typhoid conjugate vaccine", [(CVX, "190", "Typhoid conjugate vaccine (non-US)"),
                                          (ICD11, "XM8BU8", "Typhoid vaccines")]),
    "TD": ("Tetanus-diphtheria vaccine (TT/Td)", [(SNOMED, "2031000221103", "Tetanus and diphtheria vaccine"),
                                                  (CVX, "139", "Td(adult) unspecified formulation")]),
}
MAPPED_TO_NHR = {(system, code): nhr for nhr, (_, codings) in ANTIGENS.items() for system, code, _ in codings}


def vaccine_codeable(vaccine: str) -> dict:
    if vaccine not in ANTIGENS:  # a group outside the schedule (INFLUENZA, HPV...), UNKNOWN or SUBPOTENT
        return {"coding": [{"system": VACCINE_GROUP, "code": vaccine}], "text": vaccine.title()}
    display, mapped = ANTIGENS[vaccine]
    coding = [{"system": EPI_ANTIGEN, "code": vaccine, "display": display}]
    coding += [{"system": s, "code": c, "display": d} for s, c, d in mapped]
    return {"coding": coding, "text": display}


def vaccine_from_coding(system: str | None, code: str | None) -> str | None:
    """The NHR antigen for a coding, or None if the coding is not one NHR knows."""
    if not code:
        return None
    if system == EPI_ANTIGEN:
        return code.strip().upper() if code.strip().upper() in ANTIGENS else None
    return MAPPED_TO_NHR.get((system, code.strip()))
