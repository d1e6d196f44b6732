"""Maintained aggregates for coverage reports, target populations and DHIS2 mappings.

Invariants:
- Nothing here is encrypted or needs decrypting: the aggregates are built only from columns
  that are in clear (patients.birth_date, province, district, home_facility; immunizations.
  vaccine, dose_number, date_given, status; facilities.jurisdiction_code).
- `report_child_status` has one row per patient: its leaf jurisdiction (the home facility's
  node when that lies in the patient's district, else the district), its birth cohort month
  (YYYYMM) and two bit masks over `catalogue.ITEMS` (bit i set: the child has item i at any age /
  validly by the schedule engine's judgement). `penta1_by_12m` is 1 if Penta-1 was given before
  the first birthday. `engine` is 1 for a child judged by the engine in Python rather than by
  the SQL (whose verdict is used only where it provably equals the engine's, statements.py).
- `report_coverage_counts` holds, per (leaf, cohort month, item), the number of children with
  the item (`any_count`, `valid_count`); the pseudo-item `_children` counts the children
  themselves (`any_count`) and those with Penta-1 by 12 months (`valid_count`). A report sums
  these rows, never the patients.
- A write to a patient or a dose adds the patient to `report_dirty_patients` in the same
  transaction; the refresher folds dirty patients into both tables (refresh.py).
"""

from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import JSON, BigInteger, Index, Integer, String, Uuid
from sqlalchemy.orm import Mapped, mapped_column

from security.orm import Base, UTCDateTime


class DirtyPatient(Base):
    __tablename__ = "report_dirty_patients"

    seq: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    patient_id: Mapped[uuid.UUID] = mapped_column(Uuid)


class ChildStatus(Base):
    __tablename__ = "report_child_status"

    patient_id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True)
    province: Mapped[str] = mapped_column(String(32))
    district: Mapped[str] = mapped_column(String(32))
    leaf: Mapped[str] = mapped_column(String(32))
    cohort_month: Mapped[int] = mapped_column(Integer)
    any_mask: Mapped[int] = mapped_column(BigInteger)
    valid_mask: Mapped[int] = mapped_column(BigInteger)
    penta1_by_12m: Mapped[int] = mapped_column(Integer)
    engine: Mapped[int] = mapped_column(Integer, server_default="0")  # 1: judged by the engine (judge.py), not the SQL


class CoverageCount(Base):
    __tablename__ = "report_coverage_counts"

    leaf: Mapped[str] = mapped_column(String(32), primary_key=True)
    cohort_month: Mapped[int] = mapped_column(Integer, primary_key=True)
    item: Mapped[str] = mapped_column(String(16), primary_key=True)
    province: Mapped[str] = mapped_column(String(32))
    district: Mapped[str] = mapped_column(String(32))
    any_count: Mapped[int] = mapped_column(Integer)
    valid_count: Mapped[int] = mapped_column(Integer)

    __table_args__ = (Index(None, "province", "cohort_month"), Index(None, "district", "cohort_month"))


class TargetPopulation(Base):
    """A target population figure (e.g. surviving infants) per jurisdiction and year."""

    __tablename__ = "report_target_populations"

    jurisdiction_code: Mapped[str] = mapped_column(String(32), primary_key=True)
    year: Mapped[int] = mapped_column(Integer, primary_key=True)
    population: Mapped[int] = mapped_column(Integer)
    loaded_at: Mapped[datetime] = mapped_column(UTCDateTime)
    loaded_by: Mapped[str] = mapped_column(String(64))


class Dhis2Mapping(Base):
    """A province's (or the country's) mapping of antigen-doses to DHIS2 data elements and of
    jurisdictions to organisation units, kept as loaded."""

    __tablename__ = "report_dhis2_mappings"

    jurisdiction_code: Mapped[str] = mapped_column(String(32), primary_key=True)
    document: Mapped[dict] = mapped_column(JSON)
    loaded_at: Mapped[datetime] = mapped_column(UTCDateTime)
    loaded_by: Mapped[str] = mapped_column(String(64))




class Dhis2QualityMapping(Base):
    """A province's (or the country's) mapping of data-quality metrics to DHIS2 data elements
    (registry/reports/dhis2_quality.py); organisation units come from its Dhis2Mapping."""

    __tablename__ = "report_dhis2_quality_mappings"

    jurisdiction_code: Mapped[str] = mapped_column(String(32), primary_key=True)
    document: Mapped[dict] = mapped_column(JSON)
    loaded_at: Mapped[datetime] = mapped_column(UTCDateTime)
    loaded_by: Mapped[str] = mapped_column(String(64))
