"""Immunization records (doses given).

Invariants:
- A dose is never deleted. A mistake is fixed by voiding (status `entered-in-error`) or by
  correcting (the old row becomes `superseded` and points to its replacement through the new
  row's `supersedes_id`); both carry a reason, encrypted because staff write it freely.
- A dose recorded despite breaking a validation rule (registry/immunizations/validation.py)
  carries that rule's code in `override_rule` and the recorder's free-text reason, encrypted, in
  `override_reason_ct`; both are NULL for a dose that passed every check.
- A dose *not given* (refusal, contraindication, stock-out, child absent...) is a row with
  status `not-done` and a coded `not_done_reason`. It never counts as a dose: the schedule
  engine, due lists, certificates and coverage aggregates count status `completed` only.
- Provenance (issue 12): `primary_source` is FHIR's (the record comes from whoever gave the dose);
  `administered_here` is true only for a dose the recording user gave at the recording facility
  (`facility`, `performer_id`); for any other dose those two name the *recorder*, never the
  performer, and what is known of the giver is in `report_origin`, `performer_facility`,
  `country` and the encrypted free texts `performer_text_ct`, `location_text_ct`,
  `occurrence_text_ct` ("about 2019": `date_given` is then an estimate). `source_recorded` is
  the source's own recorded date as sent; `fhir_source_ct` keeps, encrypted, the provenance
  elements of a FHIR Immunization exactly as sent so that they read back unchanged.
- Codes (issue 12): `code_system`/`code`/`code_text_ct` are the vaccine code as sent; `vaccine`
  is what it counts for (registry/immunizations/vocabulary.py): an EPI vaccine, a group outside
  the schedule (INFLUENZA, HPV...), UNKNOWN (a code NHR does not know, kept as sent) or
  SUBPOTENT. A combination product counting for several EPI vaccines has one component row per
  further vaccine (`component_of` = the main row; same patient, date, status), hidden from
  dose lists and FHIR and amended with the main row. `dose_number_inferred` marks a dose number
  NHR inferred from the order of the series' doses (none was given).
- `province`/`district` are the patient's residence at the time the dose was recorded, kept in
  clear for coverage reports that never decrypt anything.
"""

from __future__ import annotations

import uuid
from datetime import date, datetime

from sqlalchemy import Boolean, Date, ForeignKey, Index, Integer, LargeBinary, String, Uuid, false, true
from sqlalchemy.orm import Mapped, mapped_column

from security.orm import Base, UTCDateTime

STATUSES = ("completed", "entered-in-error", "superseded", "not-done")


class Immunization(Base):
    __tablename__ = "immunizations"

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True)
    version: Mapped[int] = mapped_column(Integer, default=1)
    patient_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("patients.id"), index=True)
    custodian: Mapped[str] = mapped_column(String(32))
    province: Mapped[str] = mapped_column(String(32))
    district: Mapped[str] = mapped_column(String(32))
    facility: Mapped[str] = mapped_column(ForeignKey("facilities.code"), index=True)
    vaccine: Mapped[str] = mapped_column(String(16))
    dose_number: Mapped[int] = mapped_column(Integer)
    date_given: Mapped[date] = mapped_column(Date)
    lot_number: Mapped[str | None] = mapped_column(String(40))
    performer_id: Mapped[uuid.UUID] = mapped_column(Uuid)
    status: Mapped[str] = mapped_column(String(20), default="completed")
    status_reason_ct: Mapped[bytes | None] = mapped_column(LargeBinary)
    # a `not-done` dose's coded reason (registry/immunizations/not_done.py); NULL otherwise
    not_done_reason: Mapped[str | None] = mapped_column(String(32))
    supersedes_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("immunizations.id"))
    recorded_at: Mapped[datetime] = mapped_column(UTCDateTime)
    override_rule: Mapped[str | None] = mapped_column(String(32))
    override_reason_ct: Mapped[bytes | None] = mapped_column(LargeBinary)
    # The change position of the sync feed (issue 5): stamped on insert and on every status change.
    # Nullable so that bulk loaders that predate it keep working; the feed reads it as
    # coalesce(updated_at, recorded_at).
    updated_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # Record linkage (issue 13): the patient this dose was recorded on, when a merge moved it to
    # the survivor (NULL for a dose never moved). An unmerge moves it back and clears it.
    original_patient_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("patients.id"))
    # issue 12: provenance and codes (see the module docstring)
    primary_source: Mapped[bool] = mapped_column(Boolean, default=True, server_default=true())
    administered_here: Mapped[bool] = mapped_column(Boolean, default=True, server_default=true())
    report_origin: Mapped[str | None] = mapped_column(String(24))
    performer_facility: Mapped[str | None] = mapped_column(String(64))
    performer_text_ct: Mapped[bytes | None] = mapped_column(LargeBinary)
    location_text_ct: Mapped[bytes | None] = mapped_column(LargeBinary)
    country: Mapped[str | None] = mapped_column(String(2))
    occurrence_text_ct: Mapped[bytes | None] = mapped_column(LargeBinary)
    source_recorded: Mapped[str | None] = mapped_column(String(40))
    fhir_source_ct: Mapped[bytes | None] = mapped_column(LargeBinary)
    code_system: Mapped[str | None] = mapped_column(String(200))
    code: Mapped[str | None] = mapped_column(String(64))
    code_text_ct: Mapped[bytes | None] = mapped_column(LargeBinary)
    dose_number_inferred: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    component_of: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("immunizations.id"), index=True)

    __table_args__ = (Index(None, "district", "vaccine", "dose_number", "date_given"),)
