"""One path from a `DoseCreate` to the dose rows to write, shared by the single route
(service.record), the set-based path (batch.py: batch sync, FHIR Bundles) and bulk import
(registry/bulk/chunk.py), so that provenance, codes and judgement are the same everywhere.

- The code: `vaccine` (an EPI vaccine or a vocabulary group) or `code` (looked up in the
  vocabulary, registry/immunizations/vocabulary.py). A known code counts for its EPI vaccines;
  an unknown code with a text is recorded as UNKNOWN with the code and text as sent (the
  data-quality report counts `vaccine = 'UNKNOWN'` by `code_system`, `code`); an unknown code
  with no text is refused (`code`). A subpotent dose is recorded as SUBPOTENT (counts for
  nothing).
- The date: `date_given`, or for a reported dose an estimate from `occurrence_text` (a year:
  1 July; a month and year, `2019-03` or `March 2019`: the 15th; nothing: the day it is
  reported), never before birth nor after today.
- Judgement (validation.judge): impossible facts are refused for every dose; schedule rules
  (duplicate, age, interval, maximum age) refuse a dose administered here unless overridden,
  never a reported one. A missing dose number is inferred (`dose_number_inferred`).
- Rows: the main row, plus one component row per further EPI vaccine a combination product
  counts for (same patient, date, status, `component_of` = the main row; its own inferred dose
  number in its own series).
- Provenance: for a dose administered here `facility`/`performer_id` are the recorder, who gave
  it; for a reported dose they are only the recorder, and what is known of the giver is kept
  (free texts encrypted with the row-bound field cipher, like `status_reason_ct`).
"""

from __future__ import annotations

import json
import re
import uuid
from dataclasses import dataclass, field
from datetime import date
from typing import Callable, Iterable

from registry.errors import InvalidInput
from registry.immunizations import not_done, validation
from registry.immunizations.schemas import DoseCreate
from registry.immunizations.vaccines import VACCINES
from registry.immunizations.vocabulary import SUBPOTENT, UNKNOWN, load as vocabulary

TABLE = "immunizations"
_YEAR = re.compile(r"(?<!\d)(1[89]\d\d|20\d\d)(?!\d)")
_MONTH_YEAR = re.compile(r"(?<!\d)(1[89]\d\d|20\d\d)-(0[1-9]|1[0-2])(?!\d)")
_MONTHS = ("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec")
_NAMED_MONTH = re.compile(r"\b(" + "|".join(_MONTHS) + r")[a-z]*\.?\s+(1[89]\d\d|20\d\d)(?!\d)", re.I)


@dataclass
class Built:
    verdict: validation.Verdict
    rows: list[dict] = field(default_factory=list)  # the main row first, then its components

    @property
    def row(self) -> dict:
        return self.rows[0]


@dataclass(frozen=True)
class _Code:
    vaccine: str
    counts_for: tuple[str, ...]
    dose_number: int | None
    system: str | None
    code: str | None
    text: str | None


def resolve(data: DoseCreate) -> _Code:
    """What the dose counts for (raises InvalidInput naming `code`)."""
    number = data.dose_number
    if data.code is not None:
        c = data.code
        found = vocabulary().lookup(c.system, c.code)
        if found is not None:
            entry, written = found
            vaccine, counts = (entry.vaccine, entry.counts_for) if data.vaccine is None else (data.vaccine, (data.vaccine,))
            number = number if number is not None else written
        elif data.vaccine is not None:
            vaccine, counts = data.vaccine, (data.vaccine,)
        elif c.text:
            vaccine, counts = UNKNOWN, ()
        else:
            raise InvalidInput("the vaccine code is not one NHR knows; send its text too (code.text)", field="code")
        code = _Code(vaccine, counts if vaccine in VACCINES else (), number, c.system, c.code, c.text)
    else:
        code = _Code(data.vaccine, (data.vaccine,) if data.vaccine in VACCINES else (), number, None, None, None)
    if data.subpotent:
        return _Code(SUBPOTENT, (), code.dose_number, code.system, code.code, code.text)
    return code


def estimate(text: str, birth: date, today: date) -> date:
    """The date an approximate occurrence stands for, within [birth, today]."""
    m, named = _MONTH_YEAR.search(text), _NAMED_MONTH.search(text)
    if m:
        guess = date(int(m.group(1)), int(m.group(2)), 15)
    elif named:
        guess = date(int(named.group(2)), _MONTHS.index(named.group(1).lower()[:3]) + 1, 15)
    else:
        y = _YEAR.search(text)
        guess = date(int(y.group(1)), 7, 1) if y else today
    return min(max(guess, birth), today)


def build(cipher, prow, data: DoseCreate, dose_id: uuid.UUID, *, existing: Callable[[], Iterable],
          schedule: Callable, today: date, now, facility: str, user_id: uuid.UUID,
          refuse_schedule: bool = True) -> Built:
    """Judge `data` for patient `prow` and build its rows; raises InvalidInput (DoseRefused for a
    rule) for a dose that must not be recorded. `refuse_schedule=False` (bulk import) refuses only
    the impossible and a dose administered here whose vaccine and number the child already has,
    and leaves the schedule to `validation.inferred_numbers`, which the caller runs once per child."""
    here = data.administered_here
    code = resolve(data)
    when = data.date_given or estimate(data.occurrence_text, prow.birth_date, today)
    not_given = data.status == not_done.STATUS
    if not_given:  # a dose NOT given: impossible facts only, no schedule verdict, no components
        not_done.judge(prow, data, today, vaccine=code.vaccine, dose_number=code.dose_number, date_given=when)
        verdict = validation.Verdict(None, None, code.dose_number)
    else:
        verdict = validation.judge(prow, code.vaccine, code.dose_number, when, existing, schedule, today, reported=not here,
                                   judged=refuse_schedule)
    if not not_given and here and verdict.rule is not None and data.override_reason is None and (refuse_schedule or (
            verdict.rule == validation.DUPLICATE and validation.recorded_twice(existing(), code.vaccine, code.dose_number))):
        raise validation.DoseRefused(verdict.rule, overridable=True)

    def ct(column: str, value: str | None, row_id: uuid.UUID) -> bytes | None:
        if value is None:
            return None
        return cipher.encrypt(value, table=TABLE, column=column, row_id=row_id, custodian=prow.custodian)

    overridden = here and verdict.rule is not None and data.override_reason is not None
    primary = data.primary_source if data.primary_source is not None else here
    source = getattr(data, "_fhir_source", None)

    def row(row_id: uuid.UUID, vaccine: str, number: int, inferred: bool, component_of: uuid.UUID | None) -> dict:
        return {
            "id": row_id, "version": 1, "patient_id": prow.id, "custodian": prow.custodian, "province": prow.province,
            "district": prow.district, "facility": facility, "vaccine": vaccine, "dose_number": number,
            "date_given": when, "lot_number": data.lot_number, "performer_id": user_id, "status": data.status,
            "status_reason_ct": None, "supersedes_id": None, "recorded_at": now, "updated_at": now,
            "override_rule": verdict.rule if overridden and component_of is None else None,
            "override_reason_ct": ct("override_reason_ct", data.override_reason, row_id)
            if overridden and component_of is None else None,
            "primary_source": primary, "administered_here": here, "report_origin": data.report_origin,
            "performer_facility": data.performer_facility, "country": data.country,
            "performer_text_ct": ct("performer_text_ct", data.performer_text, row_id),
            "location_text_ct": ct("location_text_ct", data.location_text, row_id),
            "occurrence_text_ct": ct("occurrence_text_ct", data.occurrence_text, row_id),
            "source_recorded": data.source_recorded,
            "fhir_source_ct": ct("fhir_source_ct", json.dumps(source, separators=(",", ":")), row_id)
            if source is not None and component_of is None else None,
            "code_system": code.system, "code": code.code, "code_text_ct": ct("code_text_ct", code.text, row_id),
            "dose_number_inferred": inferred, "component_of": component_of,
            "not_done_reason": data.not_done_reason, "original_patient_id": None,
        }

    number = verdict.dose_number if verdict.dose_number is not None else 1
    out = Built(verdict, [row(dose_id, code.vaccine, number, code.dose_number is None, None)])
    for vaccine in () if not_given else code.counts_for[1:]:
        part = validation.judge(prow, vaccine, None, when, existing, schedule, today, reported=True, judged=refuse_schedule)
        out.rows.append(row(uuid.uuid5(dose_id, vaccine), vaccine, part.dose_number if part.dose_number is not None else 1,
                            True, dose_id))
    return out
