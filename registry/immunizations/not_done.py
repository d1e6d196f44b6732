"""Doses not given: the coded reasons (a versioned value set, data/not-done-reasons-<version>.json).

A vaccinator records a due dose that was *not* given as a dose row with status `not-done` and a
reason code from this list. Each code belongs to one reporting group (refusal, medical, supply,
absent, service, other) and maps to HL7 v3 ActReason (FHIR Immunization.statusReason) where that
code system has a concept for it (IMMUNE, MEDPREC, OSTOCK, PATOBJ, PHILISOP, RELIG, VACEFF,
VACSAF); reasons without one (child absent, session not held) carry only the NHR code.

Invariants:
- A not-done row never counts as a dose: every counter (schedule engine, due lists, certificates,
  coverage aggregates) counts status `completed` only (registry/schedules/engine.COUNTED_STATUS).
- The code is stored in clear (`immunizations.not_done_reason`): it is programme data that
  reports count without decrypting anything, like the vaccine and the date.
- A code once published keeps its meaning; a later list adds codes, never renames them.
"""

from __future__ import annotations

import json
from functools import cache
from importlib import resources

from registry.errors import InvalidInput
from registry.immunizations import validation

VERSION = "2026.1"
STATUS = "not-done"
V3_ACT_REASON = "http://terminology.hl7.org/CodeSystem/v3-ActReason"
REFUSAL = "refusal"


@cache
def current() -> dict:
    text = resources.files("registry.immunizations").joinpath(f"data/not-done-reasons-{VERSION}.json").read_text(encoding="utf-8")
    return json.loads(text)


def system() -> str:
    return current()["system"]


def reasons() -> dict[str, dict]:
    return current()["reasons"]


def groups() -> dict[str, str]:
    return current()["groups"]


def group_of(code: str | None) -> str:
    entry = reasons().get(code or "")
    return entry["group"] if entry else "other"


def check(code: str | None) -> str:
    """The code, or ValueError naming the allowed codes (never echoing the value)."""
    if code is None or code not in reasons():
        raise ValueError(f"must be one of {', '.join(reasons())}")
    return code


def to_fhir(code: str) -> dict:
    """FHIR Immunization.statusReason: the NHR coding, plus the v3 ActReason coding where one exists."""
    entry = reasons()[code]
    coding = [{"system": system(), "code": code, "display": entry["display"]}]
    if entry.get("v3"):
        coding.append({"system": V3_ACT_REASON, "code": entry["v3"]})
    return {"coding": coding, "text": entry["display"]}


def from_fhir(concept: object) -> str | None:
    """The NHR code of a statusReason CodeableConcept: its NHR coding, else the first v3 code that
    maps to exactly one NHR code (PATOBJ -> refusal-other). None when nothing maps."""
    if not isinstance(concept, dict) or not isinstance(concept.get("coding"), list):
        return None
    codings = [c for c in concept["coding"] if isinstance(c, dict)]
    for c in codings:
        if c.get("system") == system() and c.get("code") in reasons():
            return c["code"]
    for c in codings:
        if c.get("system") == V3_ACT_REASON:
            if c.get("code") == "PATOBJ":
                return "refusal-other"
            hits = [k for k, v in reasons().items() if v.get("v3") == c.get("code")]
            if len(hits) == 1:
                return hits[0]
    return None


def judge(patient, data, today, *, vaccine: str | None = None, dose_number: int | None = None,
          date_given=None) -> None:
    """Refuse an impossible not-done record (InvalidInput naming the field): a lot number or an
    override (nothing was given, no rule is broken), a dose number out of range, a date before
    birth or in the future. Schedule rules do not apply: recording that a dose was *not* given
    is never refused for being early, late or a duplicate."""
    if data.lot_number is not None:
        raise InvalidInput("a dose not given has no lot number", field="lot_number")
    if data.override_reason is not None:
        raise InvalidInput("a dose not given breaks no rule: override_reason does not apply", field="override_reason")
    validation.judge(patient, vaccine or data.vaccine, dose_number if vaccine else data.dose_number,
                     date_given or data.date_given, list, lambda: None, today)
